'use strict';
// Installed first-party plugins: the @openclaw/* packages in the global node_modules directory
// next to this package (where `npm i -g @openclaw/<id>` puts them).
const fs = require('node:fs');
const path = require('node:path');
const { nodeModulesDir, readJsonOr } = require('./pkg.js');

function scopeDir() {
  return path.join(nodeModulesDir(), '@openclaw');
}

function describe(dir) {
  const pkg = readJsonOr(path.join(dir, 'package.json'), null);
  if (!pkg || typeof pkg.name !== 'string') {
    return null;
  }
  const meta = pkg.openclaw && typeof pkg.openclaw === 'object' ? pkg.openclaw : {};
  return {
    id: pkg.name.replace(/^@openclaw\//, ''),
    name: pkg.name,
    version: pkg.version,
    enabled: true,
    status: 'loaded',
    origin: 'npm',
    rootDir: dir,
    peerOpenclaw: (pkg.peerDependencies || {}).openclaw || null,
    pluginApi: (meta.compat || {}).pluginApi || null,
    minHostVersion: (meta.install || {}).minHostVersion || null,
  };
}

function installedPlugins() {
  let names;
  try {
    names = fs.readdirSync(scopeDir()).sort();
  } catch {
    return [];
  }
  return names.map((name) => describe(path.join(scopeDir(), name))).filter(Boolean);
}

module.exports = { installedPlugins };
