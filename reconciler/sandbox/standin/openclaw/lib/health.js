'use strict';
// `openclaw health --json`: asks the running gateway for its snapshot. Like the product it has no
// --token flag (OPENCLAW_GATEWAY_TOKEN or gateway.auth.token) and exits non-zero when the
// gateway cannot be reached or is not ready.
const { HEALTH_PATH } = require('./gateway-server.js');
const { getJson } = require('./http-client.js');
const state = require('./state.js');

function unreachable(port, err) {
  process.stderr.write(
    `gateway closed (1006 abnormal closure): connect to ws://127.0.0.1:${port} failed: ${err.message}\n`
    + 'Gateway not reachable. Is it running? Try: openclaw gateway status\n',
  );
  return 1;
}

function printText(snapshot) {
  const channels = Object.entries(snapshot.channels)
    .map(([id, c]) => `${id}: ${c.running ? 'running' : 'stopped'}`);
  process.stdout.write(
    `Gateway: ${snapshot.ok ? 'ok' : 'not ready'} (${snapshot.durationMs}ms)\n`
    + `Channels: ${channels.length ? channels.join(', ') : 'none'}\n`
    + `Agents: ${snapshot.agents.map((a) => a.agentId).join(', ')}\n`,
  );
}

async function runHealth(flags) {
  const port = state.gatewayPort();
  const token = state.gatewayToken();
  const timeoutMs = flags.timeout ? Number.parseInt(flags.timeout, 10) : 10000;
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const began = Date.now();
  let answer;
  try {
    answer = await getJson(port, HEALTH_PATH, { timeoutMs, headers });
  } catch (err) {
    return unreachable(port, err);
  }
  if (answer.status !== 200 || !answer.body) {
    const why = answer.body && answer.body.error ? answer.body.error : `HTTP ${answer.status}`;
    process.stderr.write(`gateway health failed: ${why}\n`);
    return 1;
  }
  const snapshot = { ...answer.body, durationMs: Date.now() - began };
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(snapshot, null, 2)}\n`);
  } else {
    printText(snapshot);
  }
  return snapshot.ok ? 0 : 1;
}

module.exports = { runHealth };
