'use strict';
// `openclaw gateway run`: the foreground gateway. Speaks the real probe endpoints
// (/healthz, /readyz, /startupz), serves a health snapshot to `openclaw health` on an internal
// endpoint, and answers every other path (e.g. GET /, POST /hooks/wake) with its version and
// profile so load-balancer tests can see which backend and which release served a request.
// Faults are re-read on every request; the version is the one loaded at start (the running one),
// and so are the plugins (tracked installs and enabled bundled ones), until `openclaw plugins ...`
// asks it to reload them. Like the product it refuses to start without auth (a token), when the
// config was last written by a newer release (the downgrade guard), or under crash_at_start:
// it exits and nothing listens.
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { monitorEventLoopDelay, performance } = require('node:perf_hooks');
const { startupRefusal } = require('./config.js');
const faults = require('./faults.js');
const { installedVersion, readJsonOr } = require('./pkg.js');
const { loadedPlugins } = require('./plugins.js');
const { RELOAD_PATH } = require('./plugins-cli.js');
const state = require('./state.js');

const HEALTH_PATH = '/__standin/health';
const DEFAULT_READY_DELAY_S = 0.2;

function bindHost(bind) {
  if (bind === 'loopback') {
    return '127.0.0.1';
  }
  if (bind === 'lan') {
    return '0.0.0.0';
  }
  throw new Error(`unsupported --bind ${bind} (the stand-in knows loopback and lan)`);
}

class Gateway {
  constructor({ version, port, bind, token }) {
    this.version = version;
    this.port = port;
    this.bind = bind;
    this.token = token;
    this.profile = state.profile() || 'default';
    this.startedAt = Date.now();
    this.draining = false;
    this.served = 0;
    this.loopDelay = monitorEventLoopDelay({ resolution: 20 });
    this.loopDelay.enable();
    this.plugins = loadedPlugins();
    this.generation = 1;
  }

  uptimeMs() {
    return Date.now() - this.startedAt;
  }

  // Why the gateway is not ready (empty when it is), evaluated against the current faults.
  failing(active) {
    if (this.draining) {
      return ['draining'];
    }
    if (faults.isOn('never_ready', this.version, active)) {
      return ['standin.never_ready'];
    }
    const delayMs = 1000 * faults.numberFor('ready_delay_s', this.version, DEFAULT_READY_DELAY_S, active);
    return this.uptimeMs() < delayMs ? ['startup'] : [];
  }

  eventLoop() {
    return {
      utilization: Number(performance.eventLoopUtilization().utilization.toFixed(4)),
      delayP99Ms: Number((this.loopDelay.percentile(99) / 1e6).toFixed(2)),
      delayMaxMs: Number((this.loopDelay.max / 1e6).toFixed(2)),
    };
  }

  readyz(active) {
    const failing = this.failing(active);
    if (failing.length) {
      return [503, { ready: false, failing, uptimeMs: this.uptimeMs() }];
    }
    return [200, { ready: true, failing: [], uptimeMs: this.uptimeMs(), eventLoop: this.eventLoop() }];
  }

  startupz(active) {
    const ready = this.failing(active).length === 0;
    const status = ready ? 'started' : this.draining ? 'draining' : 'starting';
    return [ready ? 200 : 503, { ok: ready, status, version: this.version, uptimeMs: this.uptimeMs() }];
  }

  snapshot(active) {
    const began = Date.now();
    const plugins = this.plugins.filter((p) => p.origin !== 'bundled');
    const channels = {};
    for (const plugin of plugins) {
      channels[plugin.id] = {
        accountId: 'default', enabled: true, configured: true, running: true, lastError: null,
      };
    }
    const pending = faults.numberFor('ingress_pending', this.version, 0, active);
    const ingressPressure = pending > 0 ? [{
      channelId: plugins.length ? plugins[0].id : 'webchat',
      accountId: 'default',
      laneCount: 1,
      pendingCount: pending,
      claimedCount: 0,
      blockedCount: 0,
      oldestReceivedAt: this.startedAt,
    }] : [];
    return {
      ok: this.failing(active).length === 0,
      ts: Date.now(),
      durationMs: Date.now() - began,
      plugins: { loaded: this.plugins.map((p) => p.id).sort(), errors: [], unavailable: [] },
      heartbeatSeconds: 60,
      defaultAgentId: 'main',
      agents: [{ agentId: 'main', isDefault: true, sessions: { count: 0, recent: [] } }],
      sessions: {
        path: path.join(state.stateDir(), 'agents', 'main', 'sessions', 'sessions.json'),
        count: 0,
        recent: [],
      },
      channels,
      channelOrder: Object.keys(channels),
      // 2026.9.6 prints no deliveryQueues while nothing waits (seen on an idle gateway); the
      // stand-in shows the ingress lanes only when its ingress_pending fault holds some.
      ...(ingressPressure.length ? { deliveryQueues: { ingressPressure } } : {}),
    };
  }

  authorized(req) {
    return req.headers.authorization === `Bearer ${this.token}`;
  }

  health(req, active) {
    if (!this.authorized(req)) {
      return [401, { ok: false, error: 'unauthorized: gateway token mismatch' }];
    }
    return [200, this.snapshot(active)];
  }

  reloadPlugins(req) {
    if (req.method !== 'POST' || !this.authorized(req)) {
      return [401, { ok: false, error: 'unauthorized: gateway token mismatch' }];
    }
    this.plugins = loadedPlugins();
    this.generation += 1;
    return [200, { ok: true, generation: this.generation, loaded: this.plugins.map((p) => p.id) }];
  }

  traffic(req, pathname, active) {
    this.served += 1;
    const base = { version: this.version, profile: this.profile, port: this.port, method: req.method, path: pathname };
    if (faults.isOn('http_5xx', this.version, active)) {
      const code = req.method === 'GET' || req.method === 'HEAD' ? 503 : 500;
      return [code, { ok: false, error: 'standin fault http_5xx', ...base }];
    }
    return [200, { ok: true, ...base, served: this.served }];
  }

  route(req) {
    const pathname = new URL(req.url, 'http://gateway').pathname;
    const active = faults.loadFaults();
    switch (pathname) {
      case '/healthz':
        return [200, { ok: true, status: 'live' }];
      case '/readyz':
        return this.readyz(active);
      case '/startupz':
        return this.startupz(active);
      case HEALTH_PATH:
        return this.health(req, active);
      case RELOAD_PATH:
        return this.reloadPlugins(req);
      default:
        return this.traffic(req, pathname, active);
    }
  }

  handle(req, res) {
    req.resume();
    req.on('end', () => {
      const [status, body] = this.route(req);
      const text = `${JSON.stringify(body)}\n`;
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    });
  }
}

function writeRuntime(gateway, host) {
  const p = state.paths();
  fs.mkdirSync(p.stateDir, { recursive: true });
  state.writeFileAtomic(p.pidFile, `${process.pid}\n`);
  state.writeJsonAtomic(p.runtimeFile, {
    pid: process.pid,
    port: gateway.port,
    host,
    bind: gateway.bind,
    version: gateway.version,
    profile: gateway.profile,
    startedAt: new Date(gateway.startedAt).toISOString(),
  });
}

// Removes the pidfile and runtime file, but only while they still name this process.
function clearRuntime() {
  const p = state.paths();
  const pidInFile = Number.parseInt((readText(p.pidFile) || '').trim(), 10);
  if (pidInFile === process.pid) {
    state.removeQuietly(p.pidFile);
  }
  const runtime = readJsonOr(p.runtimeFile, null);
  if (runtime && runtime.pid === process.pid) {
    state.removeQuietly(p.runtimeFile);
  }
}

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.removeListener('error', reject);
      resolve(server.address().port);
    });
  });
}

function shutdownOnSignals(server, gateway, resolve) {
  const stop = (signal) => {
    gateway.draining = true;
    process.stderr.write(`[gateway] ${signal}: draining and shutting down\n`);
    clearRuntime();
    server.close(() => resolve(0));
    server.closeAllConnections();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

// Why this gateway must not start (the product's words), or null.
function refusal(version, host, port, token) {
  const active = faults.loadFaults();
  if (faults.isOn('crash_at_start', version, active) || faults.isOn('crash_on_start', version, active)) {
    return `Gateway failed to start: OpenClaw ${version} crashed during startup (standin fault crash_at_start)`;
  }
  if (!token) {
    return `Gateway failed to start: refusing to bind gateway to ${host}:${port} without auth `
      + '(set gateway.auth.token/password, or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)';
  }
  return null;
}

async function runGateway(flags) {
  const version = installedVersion();
  const downgrade = startupRefusal();
  if (downgrade) {
    process.stderr.write(`${downgrade}\n`);
    return 1;
  }
  const port = flags.port !== undefined ? Number.parseInt(flags.port, 10) : state.gatewayPort();
  const bind = typeof flags.bind === 'string' ? flags.bind : state.gatewayBind();
  const token = typeof flags.token === 'string' ? flags.token : state.gatewayToken();
  let host;
  try {
    host = bindHost(bind);
  } catch (err) {
    process.stderr.write(`openclaw gateway run: ${err.message}\n`);
    return 2;
  }
  const refused = refusal(version, host, port, token);
  if (refused) {
    process.stderr.write(`${refused}\n`);
    return 1;
  }
  const gateway = new Gateway({ version, port, bind, token });
  const server = http.createServer((req, res) => gateway.handle(req, res));
  try {
    gateway.port = await listen(server, port, host);
  } catch (err) {
    process.stderr.write(`Gateway failed to start: cannot listen on ${host}:${port}: ${err.message}\n`);
    return 1;
  }
  writeRuntime(gateway, host);
  process.stderr.write(`[gateway] OpenClaw ${version} (standin) listening on http://${host}:${gateway.port} (pid ${process.pid})\n`);
  return new Promise((resolve) => shutdownOnSignals(server, gateway, resolve));
}

module.exports = { runGateway, HEALTH_PATH };
