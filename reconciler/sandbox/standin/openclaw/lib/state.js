'use strict';
// Where a host keeps its state, resolved the way the real product does:
// OPENCLAW_STATE_DIR, else ~/.openclaw-<profile> when OPENCLAW_PROFILE is set, else ~/.openclaw.
// HOME comes from the environment so an sshd `SetEnv HOME=...` gives each test node its own.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const DEFAULT_PORT = 18789;

function homeDir(env = process.env) {
  return env.HOME || env.USERPROFILE || os.homedir();
}

function profile(env = process.env) {
  const value = (env.OPENCLAW_PROFILE || '').trim();
  return value && value !== 'default' ? value : null;
}

function stateDir(env = process.env) {
  if (env.OPENCLAW_STATE_DIR) {
    return path.resolve(env.OPENCLAW_STATE_DIR);
  }
  const name = profile(env);
  return path.join(homeDir(env), name ? `.openclaw-${name}` : '.openclaw');
}

function configPath(env = process.env) {
  return env.OPENCLAW_CONFIG_PATH
    ? path.resolve(env.OPENCLAW_CONFIG_PATH)
    : path.join(stateDir(env), 'openclaw.json');
}

// Reads openclaw.json. Returns {config, error}: a missing file is an empty config, a file that
// does not parse is reported (doctor turns it into a finding) and treated as empty.
function readConfig(env = process.env) {
  const file = configPath(env);
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { config: {}, error: null, file };
  }
  try {
    const parsed = JSON.parse(text);
    return { config: parsed && typeof parsed === 'object' ? parsed : {}, error: null, file };
  } catch (err) {
    return { config: {}, error: String(err.message || err), file };
  }
}

function gatewayConfig(env = process.env) {
  const { config } = readConfig(env);
  return config.gateway && typeof config.gateway === 'object' ? config.gateway : {};
}

function gatewayPort(env = process.env) {
  const fromEnv = Number.parseInt(env.OPENCLAW_GATEWAY_PORT || '', 10);
  if (Number.isInteger(fromEnv) && fromEnv >= 0) {
    return fromEnv;
  }
  const fromConfig = Number.parseInt(String(gatewayConfig(env).port ?? ''), 10);
  return Number.isInteger(fromConfig) && fromConfig > 0 ? fromConfig : DEFAULT_PORT;
}

function gatewayToken(env = process.env) {
  if (env.OPENCLAW_GATEWAY_TOKEN) {
    return env.OPENCLAW_GATEWAY_TOKEN;
  }
  const auth = gatewayConfig(env).auth;
  return auth && typeof auth.token === 'string' && auth.token ? auth.token : null;
}

function gatewayBind(env = process.env) {
  const bind = gatewayConfig(env).bind;
  return typeof bind === 'string' && bind ? bind : 'loopback';
}

function paths(env = process.env) {
  const dir = stateDir(env);
  return {
    stateDir: dir,
    pidFile: path.join(dir, 'gateway.pid'),
    runtimeFile: path.join(dir, 'gateway.json'),
    logDir: path.join(dir, 'logs'),
    logFile: path.join(dir, 'logs', 'gateway.log'),
    updateDir: path.join(dir, 'update'),
    lastRunFile: path.join(dir, 'update', 'last-run.json'),
    activeRunFile: path.join(dir, 'update', 'active-run.json'),
  };
}

// Writes a file atomically (temp file + rename) so a reader never sees half a JSON document.
function writeFileAtomic(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function writeJsonAtomic(file, value) {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

function removeQuietly(file) {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone
  }
}

module.exports = {
  DEFAULT_PORT, homeDir, profile, stateDir, configPath, readConfig, gatewayPort, gatewayToken,
  gatewayBind, paths, writeFileAtomic, writeJsonAtomic, removeQuietly,
};
