'use strict';
// `openclaw gateway start|stop|restart|status`: daemon control for hosts without launchd or
// systemd. `start` spawns `gateway run` fully detached (own session, stdio to
// <state>/logs/gateway.log, nothing inherited) so an SSH command that runs it returns at once.
// It waits until the gateway listens, but like systemd or launchd it exits 0 when the process it
// started dies at once: the caller learns that from the probes, which nothing answers.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const { getJson } = require('./http-client.js');
const { binPath, installedVersion, readJsonOr } = require('./pkg.js');
const state = require('./state.js');

const START_WAIT_MS = 10000;
const STOP_WAIT_MS = 10000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readPid(file) {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

// Alive and not a zombie (a reaped-late child must count as stopped).
function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc (macOS): trust kill(0)
  }
}

// Alive and really a `gateway run` process, so a stale pidfile never makes us kill a stranger.
function isGateway(pid) {
  if (!pid || !isAlive(pid)) {
    return false;
  }
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes('gateway') && argv.includes('run');
  } catch {
    return true;
  }
}

function serviceLabel() {
  const profile = state.profile();
  if (process.platform === 'darwin') {
    return profile ? `ai.openclaw.${profile}` : 'ai.openclaw.gateway';
  }
  return profile ? `openclaw-gateway-${profile}.service` : 'openclaw-gateway.service';
}

function emit(flags, json, text) {
  process.stdout.write(flags.json ? `${JSON.stringify(json, null, 2)}\n` : `${text}\n`);
}

function clearPidFiles(p) {
  state.removeQuietly(p.pidFile);
  state.removeQuietly(p.runtimeFile);
}

function logTail(file, lines = 5) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function spawnGateway(p, flags) {
  const port = flags.port !== undefined ? String(flags.port) : String(state.gatewayPort());
  const bind = typeof flags.bind === 'string' ? flags.bind : state.gatewayBind();
  const token = typeof flags.token === 'string' ? flags.token : state.gatewayToken();
  const env = { ...process.env };
  if (token) {
    env.OPENCLAW_GATEWAY_TOKEN = token;
  }
  fs.mkdirSync(p.logDir, { recursive: true });
  const fd = fs.openSync(p.logFile, 'a');
  const child = spawn(process.execPath, [binPath(), 'gateway', 'run', '--port', port, '--bind', bind], {
    detached: true, stdio: ['ignore', fd, fd], env, cwd: p.stateDir,
  });
  fs.closeSync(fd);
  return child;
}

// Resolves 'listening' once the child wrote its runtime file, 'exited' if it died first.
async function waitForListening(child, p) {
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const deadline = Date.now() + START_WAIT_MS;
  while (Date.now() < deadline) {
    const runtime = readJsonOr(p.runtimeFile, null);
    if (runtime && runtime.pid === child.pid) {
      return 'listening';
    }
    if (exited) {
      return 'exited';
    }
    await sleep(20);
  }
  return 'timeout';
}

async function start(flags, action = 'start') {
  const p = state.paths();
  const running = readPid(p.pidFile);
  if (isGateway(running)) {
    emit(flags, { ok: true, action, pid: running, alreadyRunning: true }, `Gateway already running (pid ${running})`);
    return 0;
  }
  clearPidFiles(p);
  const child = spawnGateway(p, flags);
  state.writeFileAtomic(p.pidFile, `${child.pid}\n`);
  const outcome = await waitForListening(child, p);
  child.unref();
  if (outcome === 'exited') {
    // Like a service manager: the process was started, so start/restart exit 0 even though it
    // died at once (refused a downgrade, had no token, crashed); nothing listens.
    clearPidFiles(p);
    process.stderr.write(`Gateway process exited during startup; see ${p.logFile}\n${logTail(p.logFile)}\n`);
    emit(flags, { ok: true, action, pid: child.pid, exited: true }, `Started gateway (pid ${child.pid}), which exited`);
    return 0;
  }
  if (outcome !== 'listening') {
    process.stderr.write(`Gateway did not start (${outcome}); see ${p.logFile}\n${logTail(p.logFile)}\n`);
    return 1;
  }
  const runtime = readJsonOr(p.runtimeFile, {});
  emit(flags, { ok: true, action, pid: child.pid, port: runtime.port },
    `Started gateway (pid ${child.pid}, port ${runtime.port})`);
  return 0;
}

async function waitForExit(pid, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) {
      return true;
    }
    await sleep(20);
  }
  return !isAlive(pid);
}

// Stops the gateway named by the pidfile: SIGTERM, wait, SIGKILL as a last resort.
async function stopGateway(p) {
  const pid = readPid(p.pidFile);
  if (!isGateway(pid)) {
    clearPidFiles(p);
    return { pid: null, stopped: false };
  }
  process.kill(pid, 'SIGTERM');
  if (!(await waitForExit(pid, STOP_WAIT_MS))) {
    process.kill(pid, 'SIGKILL');
    await waitForExit(pid, 2000);
  }
  clearPidFiles(p);
  return { pid, stopped: true };
}

async function stop(flags) {
  const { pid, stopped } = await stopGateway(state.paths());
  emit(flags, { ok: true, action: 'stop', pid, stopped },
    stopped ? `Stopped gateway (pid ${pid})` : 'Gateway not running');
  return 0;
}

async function restart(flags) {
  await stopGateway(state.paths());
  return start(flags, 'restart');
}

async function probeRunning(port) {
  try {
    return await getJson(port, '/startupz', { timeoutMs: 2000 });
  } catch {
    return null;
  }
}

async function status(flags) {
  const p = state.paths();
  const pidInFile = readPid(p.pidFile);
  const running = isGateway(pidInFile);
  const runtime = running ? readJsonOr(p.runtimeFile, {}) : {};
  const port = runtime.port || state.gatewayPort();
  const probe = running ? await probeRunning(port) : null;
  const pid = running ? pidInFile : null;
  const report = {
    service: {
      kind: 'standin-daemon',
      label: serviceLabel(),
      loaded: true,
      pidFile: p.pidFile,
      logFile: p.logFile,
      runtime: { status: running ? 'running' : 'stopped', pid },
    },
    gateway: {
      version: probe && probe.body ? probe.body.version : runtime.version || null,
      installedVersion: installedVersion(),
      pid,
      port,
      bind: runtime.bind || state.gatewayBind(),
      running,
      ready: Boolean(probe && probe.status === 200),
    },
  };
  const text = running
    ? `Gateway running (pid ${pid}, port ${port}, version ${report.gateway.version})`
    : 'Gateway not running';
  emit(flags, report, text);
  return 0;
}

module.exports = { start, stop, restart, status, isGateway, readPid };
