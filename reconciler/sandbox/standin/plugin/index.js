'use strict';
// Stand-in OpenClaw plugin: registers nothing; it exists so its package.json (peer range,
// openclaw.compat.pluginApi, openclaw.install.minHostVersion) can be installed and inspected.
const pkg = require('./package.json');

module.exports = {
  id: pkg.name.replace(/^@openclaw\//, ''),
  version: pkg.version,
  register() {
    return {};
  },
};
