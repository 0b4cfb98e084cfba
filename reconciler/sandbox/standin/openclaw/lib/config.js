'use strict';
// `openclaw config get|set <path> [value]`, and the one way this stand-in writes openclaw.json.
// Like the product, every config write stamps `meta.lastTouchedVersion` with the version of the
// binary that wrote it (`config set`, `plugins install|update|uninstall|enable|disable`,
// `openclaw update`); an older binary then refuses to start the gateway (see startupRefusal).
// A plain `npm i -g openclaw@newer` writes nothing, and neither do doctor and health.
const { installedVersion } = require('./pkg.js');
const { compareVersions } = require('./semver-lite.js');
const state = require('./state.js');

const ALLOW_OLDER_ENV = 'OPENCLAW_ALLOW_OLDER_BINARY_DESTRUCTIVE_ACTIONS';

// Reads openclaw.json for a change; a file that does not parse is never overwritten.
function loadForWrite() {
  const { config, error, file } = state.readConfig();
  if (error) {
    throw new Error(`refusing to rewrite ${file}: it does not parse (${error})`);
  }
  return config;
}

// Writes openclaw.json with meta.lastTouchedVersion set to this binary's version.
function writeConfig(config) {
  const meta = config.meta && typeof config.meta === 'object' ? config.meta : {};
  const stamped = { ...config, meta: { ...meta, lastTouchedVersion: installedVersion() } };
  state.writeJsonAtomic(state.configPath(), stamped);
  return stamped;
}

// Applies `change(config)` to the current config and writes the result (stamped).
function updateConfig(change) {
  const config = loadForWrite();
  change(config);
  return writeConfig(config);
}

function getPath(config, dotted) {
  return dotted.split('.').reduce((node, key) => (node && typeof node === 'object' ? node[key] : undefined), config);
}

function setPath(config, dotted, value) {
  const keys = dotted.split('.');
  let node = config;
  for (const key of keys.slice(0, -1)) {
    if (!node[key] || typeof node[key] !== 'object') {
      node[key] = {};
    }
    node = node[key];
  }
  node[keys[keys.length - 1]] = value;
}

// Values parse as JSON when possible, otherwise they are raw strings (the product: JSON5).
function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// The product's downgrade guard: the message and refusal of 2026.9.x, or null when allowed.
function startupRefusal(env = process.env) {
  const { config } = state.readConfig(env);
  const last = config.meta && typeof config.meta.lastTouchedVersion === 'string'
    ? config.meta.lastTouchedVersion : null;
  const version = installedVersion();
  if (!last || compareVersions(version, last) >= 0 || env[ALLOW_OLDER_ENV] === '1') {
    return null;
  }
  return 'Refusing to run automatic gateway startup migrations because this OpenClaw binary '
    + `(${version}) is older than the config last written by OpenClaw ${last}. Run the newer `
    + 'openclaw binary on PATH, or reinstall the intended gateway service from the newer install. '
    + `Set ${ALLOW_OLDER_ENV}=1 only for an intentional downgrade or recovery action.`;
}

function runConfig(sub, args, flags) {
  const [dotted, raw] = args;
  if (sub === 'get' && dotted) {
    const value = getPath(state.readConfig().config, dotted);
    if (value === undefined) {
      process.stderr.write(`Config path not found: ${dotted}\n`);
      return 1;
    }
    const text = typeof value === 'object' || flags.json ? JSON.stringify(value, null, 2) : String(value);
    process.stdout.write(`${text}\n`);
    return 0;
  }
  if (sub === 'set' && dotted && raw !== undefined) {
    updateConfig((config) => setPath(config, dotted, parseValue(raw)));
    process.stdout.write(`Updated ${dotted}. Restart the gateway to apply.\n`);
    return 0;
  }
  process.stderr.write('Usage: openclaw config get <path> | config set <path> <value>\n');
  return 2;
}

module.exports = { runConfig, updateConfig, startupRefusal };
