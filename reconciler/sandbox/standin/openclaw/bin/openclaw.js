#!/usr/bin/env node
'use strict';
// Entry point of the stand-in `openclaw` CLI. Everything lives in ../lib; cli.js loads every
// module up front because `openclaw update` replaces these files on disk while it runs.
const { main } = require('../lib/cli.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`openclaw: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
