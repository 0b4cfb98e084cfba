'use strict';
// Plugins the way the product finds them: a few bundled ones (inside the core, most disabled) and
// TRACKED installs made by `openclaw plugins install npm:<pkg>@<version> --pin`. A package put
// beside the core with `npm i -g @openclaw/<id>` is never discovered, exactly like the product.
// A tracked install is an npm project of its own under <state>/npm/projects/<name>-<hash>, its
// record is kept in <state>/state/plugin-installs.json, and the config gets
// plugins.entries.<id>.enabled (a stamped write). `plugins list --json` prints the real shape.
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { PKG_DIR, installedVersion, npmCommand, readJsonOr } = require('./pkg.js');
const state = require('./state.js');

// A sample of the ~61 bundled plugins of 2026.9.5 ([id, name, description, enabled by default]).
const BUNDLED = [
  ['a2a', 'A2A', 'A2A v1.0 Agent-to-Agent protocol channel plugin.', false],
  ['anthropic', 'Anthropic', 'Anthropic models, Claude CLI, and native Claude session catalog.', true],
  ['browser', 'Browser', 'Browser control tools.', true],
  ['memory-core', 'OpenClaw Memory', 'OpenClaw core memory search plugin', true],
  ['telegram', 'Telegram', 'Telegram channel plugin.', false],
  ['webhooks', 'Webhooks', 'Webhook ingress routes.', false],
];
const NPM_TIMEOUT_MS = 10 * 60 * 1000;
const RANGE_CHARS = /[\s^~<>=*|]|(^|\.)x(\.|$)/i;

function installsFile() {
  return path.join(state.stateDir(), 'state', 'plugin-installs.json');
}

function readInstalls() {
  const doc = readJsonOr(installsFile(), {});
  return doc && typeof doc.installs === 'object' && doc.installs ? doc.installs : {};
}

function writeInstalls(installs) {
  state.writeJsonAtomic(installsFile(), { installs });
}

function entries(config) {
  const plugins = config.plugins && typeof config.plugins === 'object' ? config.plugins : {};
  return plugins.entries && typeof plugins.entries === 'object' ? plugins.entries : {};
}

function enabledIn(config, id, fallback) {
  const entry = entries(config)[id];
  return entry && typeof entry.enabled === 'boolean' ? entry.enabled : fallback;
}

function titleCase(id) {
  return id.split('-').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(' ');
}

function bundledPlugin([id, name, description, byDefault], config) {
  const rootDir = path.join(PKG_DIR, 'dist', 'extensions', id);
  const enabled = enabledIn(config, id, byDefault);
  return {
    id, name, version: installedVersion(), description, format: 'openclaw',
    source: path.join(rootDir, 'index.js'), rootDir, origin: 'bundled',
    trust: { reason: 'bundled', registryPath: installsFile(), origin: 'bundled' },
    enabled, status: enabled ? 'loaded' : 'disabled',
  };
}

function dependencyStatus(pkg, rootDir) {
  const deps = Object.entries((pkg && pkg.dependencies) || {}).map(([name, spec]) => {
    const resolvedPath = path.join(rootDir, 'node_modules', name);
    return { name, spec, installed: fs.existsSync(resolvedPath), optional: false, resolvedPath };
  });
  const missing = [...(pkg ? [] : [path.basename(rootDir)]), ...deps.filter((d) => !d.installed).map((d) => d.name)];
  return {
    hasDependencies: deps.length > 0,
    installed: missing.length === 0,
    requiredInstalled: missing.length === 0,
    optionalInstalled: true,
    missing,
    missingOptional: [],
    dependencies: deps,
    optionalDependencies: [],
  };
}

// A tracked install as `plugins list --json` shows it; its code may be gone (e.g. after a state
// restore: archives omit node_modules), then it is an error until `plugins update` reinstalls it.
function trackedPlugin(record, config) {
  const pkg = readJsonOr(path.join(record.rootDir, 'package.json'), null);
  const manifest = readJsonOr(path.join(record.rootDir, 'openclaw.plugin.json'), {});
  const extensions = (pkg && pkg.openclaw && pkg.openclaw.extensions) || ['./index.js'];
  const enabled = enabledIn(config, record.id, true);
  return {
    id: record.id,
    name: manifest.name || titleCase(record.id),
    version: pkg ? pkg.version : record.version,
    description: (pkg && pkg.description) || '',
    format: 'openclaw',
    source: path.join(record.rootDir, extensions[0]),
    rootDir: record.rootDir,
    origin: 'global',
    trustedOfficialInstall: record.packageName.startsWith('@openclaw/'),
    trust: {
      reason: 'trusted-official',
      registryPath: installsFile(),
      origin: 'global',
      installSource: 'npm',
      installSpec: record.installSpec,
    },
    enabled,
    status: !pkg ? 'error' : enabled ? 'loaded' : 'disabled',
    dependencyStatus: dependencyStatus(pkg, record.rootDir),
  };
}

function trackedPlugins(config = state.readConfig().config) {
  return Object.values(readInstalls())
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((record) => trackedPlugin(record, config));
}

function listPlugins() {
  const { config } = state.readConfig();
  return [...BUNDLED.map((b) => bundledPlugin(b, config)), ...trackedPlugins(config)];
}

// What a gateway loads when it starts (or reloads): every loaded plugin, by id and origin.
function loadedPlugins() {
  return listPlugins().filter((p) => p.status === 'loaded').map((p) => ({ id: p.id, origin: p.origin }));
}

function listReport() {
  return {
    workspaceDir: path.join(state.stateDir(), 'workspace'),
    workspaceScope: 'selected',
    registry: { source: 'persisted', diagnostics: [] },
    plugins: listPlugins(),
    diagnostics: [],
  };
}

// `npm:@openclaw/discord@2026.9.5` -> {name, selector}; exact versions and dist-tags only.
function parseSpec(text) {
  const bare = text.replace(/^npm:/, '');
  const at = bare.lastIndexOf('@');
  const [name, selector] = at > 0 ? [bare.slice(0, at), bare.slice(at + 1)] : [bare, 'latest'];
  if (!/^(@[a-z0-9._-]+\/)?[a-z0-9._-]+$/.test(name) || !selector || RANGE_CHARS.test(selector)) {
    throw new Error(`unsupported npm spec ${text}: use an exact version or a dist-tag`);
  }
  return { name, selector };
}

function projectDir(name) {
  const hash = crypto.createHash('sha256').update(name).digest('hex').slice(0, 10);
  return path.join(state.stateDir(), 'npm', 'projects', `${name.replace(/^@/, '').replace('/', '-')}-${hash}`);
}

// Installs `name@selector` into the plugin's own npm project (registry from the npm config).
function npmInstall(name, selector) {
  const dir = projectDir(name);
  fs.mkdirSync(dir, { recursive: true });
  if (!fs.existsSync(path.join(dir, 'package.json'))) {
    state.writeJsonAtomic(path.join(dir, 'package.json'), { private: true });
  }
  const args = ['install', '--prefix', dir, `${name}@${selector}`, '--save-exact', '--omit=peer',
    '--ignore-scripts', '--no-audit', '--no-fund'];
  const out = spawnSync(npmCommand(), args, { encoding: 'utf8', env: process.env, timeout: NPM_TIMEOUT_MS });
  if (out.error || out.status !== 0) {
    const why = (out.stderr || (out.error && out.error.message) || '').trim().split('\n').slice(-5).join('\n');
    throw new Error(`npm install ${name}@${selector} failed:\n${why}`);
  }
  const rootDir = path.join(dir, 'node_modules', ...name.split('/'));
  return { dir, rootDir, version: readJsonOr(path.join(rootDir, 'package.json'), {}).version };
}

function record(name, selector, pin, installed) {
  const exact = `${name}@${installed.version}`;
  return {
    id: name.replace(/^@[^/]+\//, ''),
    packageName: name,
    installSource: 'npm',
    installSpec: pin || selector === installed.version ? exact : `${name}@${selector}`,
    version: installed.version,
    projectDir: installed.dir,
    rootDir: installed.rootDir,
    installedAt: new Date().toISOString(),
  };
}

module.exports = {
  BUNDLED, readInstalls, writeInstalls, entries, trackedPlugins, listPlugins, loadedPlugins,
  listReport, parseSpec, npmInstall, record,
};
