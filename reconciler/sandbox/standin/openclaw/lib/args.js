'use strict';
// A tiny argv parser: positionals, `--flag`, `--key value`, `--key=value`. Flags that take no
// value are listed so `--json doctor` is never read as `--json=doctor`.

const BOOLEAN_FLAGS = new Set([
  'json', 'yes', 'no-restart', 'dry-run', 'post-upgrade', 'force', 'verbose', 'deep',
  'help', 'fix', 'version', 'pin', 'all', 'keep-files', 'strict-json', 'verify',
  'no-include-workspace',
]);

function parseArgs(argv) {
  const positionals = [];
  const flags = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const body = arg.slice(2);
    const eq = body.indexOf('=');
    if (eq >= 0) {
      flags[body.slice(0, eq)] = body.slice(eq + 1);
    } else if (BOOLEAN_FLAGS.has(body) || i + 1 >= argv.length || argv[i + 1].startsWith('--')) {
      flags[body] = true;
    } else {
      flags[body] = argv[i + 1];
      i += 1;
    }
  }
  return { positionals, flags };
}

module.exports = { parseArgs };
