'use strict';
// postinstall of the stand-in: sleeps when the `install_delay_s` fault applies to the version
// being installed, to make `npm i -g openclaw@V` slow on chosen hosts.
//
// npm 11.19 and install scripts of GLOBAL installs: a package not covered by `allow-scripts`
// still has its script run, but npm prints an "install scripts not yet covered by allowScripts"
// warning. Callers should pass `--allow-scripts=openclaw` (name-only; `openclaw@<exact>` works
// too, ranges are rejected) to `npm i -g`. With `--strict-allow-scripts` an uncovered script is
// fatal (ESTRICTALLOWSCRIPTS), and `--ignore-scripts` skips it (and with it this fault).
const fs = require('node:fs');
const path = require('node:path');
const faults = require('../lib/faults.js');

const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version;
const delay = faults.numberFor('install_delay_s', version, 0);
if (delay > 0) {
  process.stdout.write(`openclaw standin: install_delay_s=${delay} for ${version}\n`);
  faults.sleepSync(delay);
}
