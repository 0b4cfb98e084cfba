'use strict';
// Where this copy of the stand-in is installed and which version it is. The version is always
// read from disk (never cached by require) because `openclaw update` rewrites package.json.
const fs = require('node:fs');
const path = require('node:path');

const PKG_DIR = path.resolve(__dirname, '..');

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function readJsonOr(file, fallback) {
  try {
    return readJson(file);
  } catch {
    return fallback;
  }
}

function installedVersion() {
  return readJson(path.join(PKG_DIR, 'package.json')).version;
}

// The global node_modules directory that holds this package (and the @openclaw/* plugins).
function nodeModulesDir() {
  return path.dirname(PKG_DIR);
}

// The npm prefix of a global install: <prefix>/lib/node_modules/openclaw on POSIX,
// <prefix>/node_modules/openclaw on Windows. Null when this is not a global npm layout.
function globalPrefix() {
  const nm = nodeModulesDir();
  if (path.basename(nm) !== 'node_modules' || path.basename(PKG_DIR) !== 'openclaw') {
    return null;
  }
  const parent = path.dirname(nm);
  if (process.platform === 'win32') {
    return parent;
  }
  return path.basename(parent) === 'lib' ? path.dirname(parent) : null;
}

// The npm beside this Node (a host's PATH may lack it over SSH), else whatever PATH has.
function npmCommand() {
  const sibling = path.join(path.dirname(process.execPath), 'npm');
  return fs.existsSync(sibling) ? sibling : 'npm';
}

function binPath() {
  return path.join(PKG_DIR, 'bin', 'openclaw.js');
}

module.exports = {
  PKG_DIR, readJson, readJsonOr, installedVersion, nodeModulesDir, globalPrefix, binPath, npmCommand,
};
