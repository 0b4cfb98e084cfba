'use strict';
// `openclaw plugins list|install|update|uninstall|enable|disable`, the product's verbs:
//   install npm:<pkg>@<version|tag> [--pin] [--force]   (an installed id needs --force)
//   update <ids-or-npm-specs...> | --all                 (an id reinstalls its recorded spec; an
//                                                        explicit spec wins and is recorded)
//   uninstall <ids...> --force                           (non-interactive runs need --force)
//   enable|disable <id>
// Every change is a stamped config write, then the running gateway reloads its plugins (the
// product hot-loads them: "Applied in Gateway generation N.").
const fs = require('node:fs');
const { updateConfig } = require('./config.js');
const { getJson } = require('./http-client.js');
const { installedVersion, readJsonOr } = require('./pkg.js');
const plugins = require('./plugins.js');
const state = require('./state.js');

const RELOAD_PATH = '/__standin/plugins/reload';

function fail(message) {
  process.stderr.write(`${message}\n`);
  return 1;
}

function setEnabled(id, enabled, keepDisabled = false) {
  updateConfig((config) => {
    config.plugins = config.plugins && typeof config.plugins === 'object' ? config.plugins : {};
    const current = plugins.entries(config);
    const entry = current[id] && typeof current[id] === 'object' ? current[id] : {};
    config.plugins.entries = { ...current, [id]: { ...entry, enabled: keepDisabled && entry.enabled === false ? false : enabled } };
  });
}

// Asks the running gateway to reload its plugins; prints the generation it applied.
async function applyToGateway() {
  const token = state.gatewayToken();
  try {
    const answer = await getJson(state.gatewayPort(), RELOAD_PATH, {
      method: 'POST', timeoutMs: 5000, headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    if (answer.status === 200 && answer.body) {
      process.stdout.write(`Applied in Gateway generation ${answer.body.generation}.\n`);
      return;
    }
  } catch {
    // not running: the next start loads it
  }
  process.stdout.write('Gateway not running: the change applies at its next start.\n');
}

// Like the product (2026.9.5 over a running 2026.9.4): a core other than the running gateway's
// cannot take the plugin lifecycle lease the gateway holds; stop the gateway first.
function leaseRefusal() {
  const runtime = readJsonOr(state.paths().runtimeFile, null);
  if (!runtime || !runtime.pid || runtime.version === installedVersion()) {
    return null;
  }
  try {
    process.kill(runtime.pid, 0);
  } catch {
    return null; // a stale runtime file: no gateway holds the lease
  }
  return '[openclaw] The CLI command failed.\n'
    + '[openclaw] Reason: failed to acquire plugin lifecycle lease core:plugin-lifecycle/global';
}

function list(flags) {
  const report = plugins.listReport();
  const text = report.plugins.map((p) => `${p.id}\t${p.version}\t${p.origin}\t${p.status}`).join('\n');
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${text}\n`);
  return 0;
}

async function install([specText], flags) {
  if (!specText) {
    return fail('Usage: openclaw plugins install npm:<package>@<version|tag> [--pin] [--force]');
  }
  const { name, selector } = plugins.parseSpec(specText);
  const installs = plugins.readInstalls();
  const id = name.replace(/^@[^/]+\//, '');
  if (installs[id] && !flags.force) {
    return fail(`Plugin ${id} is already installed. Run \`openclaw plugins update ${id}\` to upgrade it, `
      + `or \`openclaw plugins install npm:${name} --force\` to replace it.`);
  }
  const installed = plugins.npmInstall(name, selector);
  plugins.writeInstalls({ ...installs, [id]: plugins.record(name, selector, Boolean(flags.pin), installed) });
  setEnabled(id, true, true);
  process.stdout.write(`Installed plugin: ${id}\n`);
  await applyToGateway();
  return 0;
}

// Targets to {id: spec}: an id keeps its recorded spec, an npm spec names its tracked package
// (without a version or tag it moves back to `latest`).
function updateTargets(targets, all, installs) {
  const chosen = {};
  for (const target of all ? Object.keys(installs) : targets) {
    if (installs[target]) {
      chosen[target] = chosen[target] || installs[target].installSpec;
      continue;
    }
    const { name, selector } = plugins.parseSpec(target);
    const found = Object.values(installs).find((r) => r.packageName === name);
    if (!found) {
      throw new Error(`No tracked plugin install matches ${target}`);
    }
    chosen[found.id] = `${name}@${selector}`;
  }
  return chosen;
}

async function update(targets, flags) {
  const installs = plugins.readInstalls();
  if (!flags.all && targets.length === 0) {
    return fail('Usage: openclaw plugins update <ids-or-npm-specs...> | --all');
  }
  const chosen = updateTargets(targets, Boolean(flags.all), installs);
  const next = { ...installs };
  for (const [id, spec] of Object.entries(chosen)) {
    const { name, selector } = plugins.parseSpec(spec);
    const before = installs[id].version;
    const installed = plugins.npmInstall(name, selector);
    next[id] = plugins.record(name, selector, false, installed);
    process.stdout.write(`Updated plugin: ${id} ${before} -> ${installed.version}\n`);
  }
  plugins.writeInstalls(next);
  updateConfig(() => {});
  await applyToGateway();
  return 0;
}

async function uninstall(ids, flags) {
  const installs = plugins.readInstalls();
  const unknown = ids.filter((id) => !installs[id]);
  if (ids.length === 0 || unknown.length) {
    return fail(`Usage: openclaw plugins uninstall <ids...> --force${unknown.length ? ` (not installed: ${unknown.join(', ')})` : ''}`);
  }
  if (!flags.force && !process.stdin.isTTY) {
    return fail('plugins uninstall needs an interactive terminal to confirm; pass --force in scripts.');
  }
  const next = { ...installs };
  for (const id of ids) {
    if (!flags['keep-files']) {
      fs.rmSync(installs[id].projectDir, { recursive: true, force: true });
    }
    delete next[id];
  }
  plugins.writeInstalls(next);
  updateConfig((config) => {
    const current = plugins.entries(config);
    config.plugins = { ...config.plugins, entries: { ...current, ...Object.fromEntries(ids.map((id) => [id, { enabled: false }])) } };
  });
  process.stdout.write(ids.map((id) => `Uninstalled plugin: ${id}\n`).join(''));
  await applyToGateway();
  return 0;
}

async function toggle(id, enabled) {
  if (!id || !plugins.listPlugins().some((p) => p.id === id)) {
    return fail(`Unknown plugin: ${id || '(none)'}`);
  }
  setEnabled(id, enabled);
  process.stdout.write(`${enabled ? 'Enabled' : 'Disabled'} plugin "${id}".\n`);
  await applyToGateway();
  return 0;
}

async function runPlugins(sub, args, flags) {
  try {
    switch (sub) {
      case 'list': return list(flags);
      case 'install': return leaseRefusal() ? fail(leaseRefusal()) : await install(args, flags);
      case 'update': return leaseRefusal() ? fail(leaseRefusal()) : await update(args, flags);
      case 'uninstall': return leaseRefusal() ? fail(leaseRefusal()) : await uninstall(args, flags);
      case 'enable': return await toggle(args[0], true);
      case 'disable': return await toggle(args[0], false);
      default: return fail(`unknown plugins command: ${sub || '(none)'}`);
    }
  } catch (err) {
    return fail(`openclaw plugins ${sub}: ${err.message}`);
  }
}

module.exports = { runPlugins, RELOAD_PATH };
