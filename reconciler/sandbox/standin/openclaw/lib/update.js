'use strict';
// `openclaw update --tag V --json --yes --no-restart [--dry-run]` and `openclaw update status`.
// The updater of an npm install runs `npm i -g openclaw@V` under the SAME prefix this copy lives
// in, with the npm registry/config inherited from the environment (npm_config_*). Like the
// product it refuses, before touching anything, a target whose engines.node this Node does not
// satisfy. Every run is recorded in <state>/update/last-run.json for `update status`. A successful
// install rewrites the config, stamped by the version now installed (meta.lastTouchedVersion).
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const { updateConfig } = require('./config.js');
const daemon = require('./daemon.js');
const { PKG_DIR, binPath, globalPrefix, installedVersion, npmCommand, readJsonOr } = require('./pkg.js');
const { compareVersions, satisfies } = require('./semver-lite.js');
const state = require('./state.js');

const DEFAULT_TIMEOUT_MS = 20 * 60 * 1000;
const TAIL_CHARS = 2000;

// Runs npm and records the step the way the product's update result does.
function runStep(name, args, timeoutMs) {
  const began = Date.now();
  const out = spawnSync(npmCommand(), args, {
    encoding: 'utf8', timeout: timeoutMs, env: process.env, maxBuffer: 64 * 1024 * 1024,
  });
  const step = {
    name,
    command: ['npm', ...args].join(' '),
    cwd: process.cwd(),
    exitCode: out.error ? null : out.status,
    durationMs: Date.now() - began,
    stdoutTail: (out.stdout || '').slice(-TAIL_CHARS),
    stderrTail: (out.stderr || (out.error ? String(out.error.message) : '')).slice(-TAIL_CHARS),
  };
  return { step, ok: !out.error && out.status === 0, stdout: out.stdout || '' };
}

// Resolves a tag or version to {version, enginesNode} with `npm view`.
function resolveTarget(tag, timeoutMs) {
  const view = runStep('resolve target', ['view', `openclaw@${tag}`, 'version', 'engines', '--json'], timeoutMs);
  if (!view.ok) {
    return { step: view.step, target: null };
  }
  let parsed = JSON.parse(view.stdout || 'null');
  parsed = Array.isArray(parsed) ? parsed[parsed.length - 1] : parsed;
  if (!parsed || !parsed.version) {
    return { step: view.step, target: null };
  }
  return { step: view.step, target: { version: parsed.version, enginesNode: (parsed.engines || {}).node || null } };
}

function newRun(tag) {
  return {
    runId: crypto.randomUUID(),
    pid: process.pid,
    tag,
    startedAt: new Date().toISOString(),
  };
}

function finish(run, result) {
  const p = state.paths();
  const lastRun = {
    ...run,
    finishedAt: new Date().toISOString(),
    status: result.status,
    reason: result.reason || null,
    before: result.before,
    after: result.after,
  };
  delete lastRun.pid;
  state.writeJsonAtomic(p.lastRunFile, lastRun);
  state.removeQuietly(p.activeRunFile);
  return result;
}

function restartIfRunning(steps) {
  const pid = daemon.readPid(state.paths().pidFile);
  if (!daemon.isGateway(pid)) {
    return;
  }
  const began = Date.now();
  const out = spawnSync(process.execPath, [binPath(), 'gateway', 'restart'], {
    encoding: 'utf8', timeout: 60000, env: process.env,
  });
  steps.push({
    name: 'restart gateway',
    command: 'openclaw gateway restart',
    cwd: process.cwd(),
    exitCode: out.status,
    durationMs: Date.now() - began,
  });
}

function plan(flags) {
  const tag = typeof flags.tag === 'string' ? flags.tag : 'latest';
  const timeoutMs = flags.timeout ? Number.parseInt(flags.timeout, 10) * 1000 : DEFAULT_TIMEOUT_MS;
  return { tag, timeoutMs, prefix: globalPrefix() };
}

// A product-shaped result: {status, mode, root, reason?, before, after, steps, ...}.
function outcome(base, status, after, extra = {}) {
  const { steps, ...head } = base;
  return { status, ...head, ...extra, after, steps };
}

// Like the product, refuse to put a release on state a newer one wrote (the product checks the
// state database's schema; the stand-in, which has none, the config's stamp).
function downgradeRefusal(version) {
  const { config, file } = state.readConfig();
  const last = config.meta && typeof config.meta.lastTouchedVersion === 'string'
    ? config.meta.lastTouchedVersion : null;
  if (!last || compareVersions(version, last) >= 0) {
    return null;
  }
  return `Update refused: ${file} was written by OpenClaw ${last}; target ${version} is older.\n`
    + 'Installing manually via npm bypasses this guard; back up first and verify compatibility.';
}

// The update itself; returns the result object.
function performUpdate(flags, base, steps) {
  const { tag, timeoutMs, prefix } = plan(flags);
  if (!prefix) {
    return outcome(base, 'error', base.before, { reason: 'not-global-npm-install' });
  }
  const resolved = resolveTarget(tag, timeoutMs);
  steps.push(resolved.step);
  if (!resolved.target) {
    return outcome(base, 'error', base.before, { reason: 'target-not-found' });
  }
  const { version, enginesNode } = resolved.target;
  if (enginesNode && !satisfies(process.version, enginesNode)) {
    return outcome(base, 'error', base.before, {
      reason: 'node-engine-unsupported',
      message: `OpenClaw ${version} requires Node ${enginesNode}; this host runs ${process.version}`,
    });
  }
  const refusal = downgradeRefusal(version);
  if (refusal) {
    process.stderr.write(`${refusal}\n`);
    return outcome(base, 'error', base.before, {
      reason: 'database-schema-preflight',
      failedStep: { name: 'database-schema-preflight', command: 'openclaw update', exitCode: 1, stderrTail: refusal },
    });
  }
  if (flags['dry-run']) {
    return outcome(base, 'skipped', { version }, { reason: 'dry-run', dryRun: true });
  }
  const args = ['i', '-g', '--prefix', prefix, `openclaw@${version}`, '--engine-strict',
    '--allow-scripts=openclaw', '--no-audit', '--no-fund'];
  const install = runStep('global update', args, timeoutMs);
  steps.push(install.step);
  const after = { version: installedVersion() };
  if (!install.ok) {
    return outcome(base, 'error', after, { reason: 'global-update-failed' });
  }
  updateConfig(() => {});
  if (!flags['no-restart']) {
    restartIfRunning(steps);
  }
  return after.version === version
    ? outcome(base, 'ok', after)
    : outcome(base, 'error', after, { reason: 'version-mismatch-after-install' });
}

function runUpdate(flags) {
  const began = Date.now();
  const run = newRun(typeof flags.tag === 'string' ? flags.tag : 'latest');
  state.writeJsonAtomic(state.paths().activeRunFile, run);
  const steps = [];
  const base = { runId: run.runId, mode: 'npm', root: PKG_DIR, before: { version: installedVersion() }, steps };
  let result;
  try {
    result = performUpdate(flags, base, steps);
  } catch (err) {
    result = outcome(base, 'error', base.before, { reason: 'exception', message: String(err.message || err) });
  }
  result.durationMs = Date.now() - began;
  finish(run, result);
  const text = `Update ${result.status}: ${result.before.version} -> ${result.after.version}`
    + `${result.reason ? ` (${result.reason})` : ''}`;
  process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : `${text}\n`);
  return result.status === 'error' ? 1 : 0;
}

function activeRun(p) {
  const run = readJsonOr(p.activeRunFile, null);
  if (!run) {
    return null;
  }
  try {
    process.kill(run.pid, 0);
    return run;
  } catch {
    return null;
  }
}

function runUpdateStatus(flags) {
  const p = state.paths();
  const report = { activeRun: activeRun(p), lastRun: readJsonOr(p.lastRunFile, null) };
  const last = report.lastRun;
  const text = last ? `Last update: ${last.status} ${last.before.version} -> ${last.after.version}` : 'No update has run';
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${text}\n`);
  return 0;
}

module.exports = { runUpdate, runUpdateStatus };
