'use strict';
// Command dispatch for the stand-in `openclaw`. Every module is required here, at load time:
// `openclaw update` rewrites this package on disk while it runs, and a long-running gateway must
// keep serving the code (and the version) it started with.
const { parseArgs } = require('./args.js');
const { runBackup } = require('./backup.js');
const { runConfig } = require('./config.js');
const daemon = require('./daemon.js');
const { runDoctor } = require('./doctor.js');
const { runGateway } = require('./gateway-server.js');
const { runHealth } = require('./health.js');
const { installedVersion } = require('./pkg.js');
const { runPlugins } = require('./plugins-cli.js');
const { runUpdate, runUpdateStatus } = require('./update.js');

const USAGE = `Usage: openclaw <command> [options]   (stand-in for tests)

  --version | -V | -v
  doctor [--json] [--post-upgrade]
  health [--json] [--timeout <ms>]
  gateway run [--port <p>] [--bind loopback|lan] [--token <t>]
  gateway start|stop|restart|status [--json] [--port <p>]
  update [--tag <version>] [--json] [--yes] [--no-restart] [--dry-run] [--timeout <s>]
  update status [--json]
  config get <path> | config set <path> <value>
  plugins list [--json]
  plugins install npm:<package>@<version|tag> [--pin] [--force]
  plugins update <ids-or-npm-specs...> | --all
  plugins uninstall <ids...> --force [--keep-files]
  plugins enable|disable <id>
  backup create [--output <path>] [--json] [--verify] [--dry-run] [--no-include-workspace]
  backup verify <archive> [--json]
  backup restore <archive> --target <fresh dir> [--json]
`;

// The product prints `OpenClaw 2026.9.6 (eb377ac)`; the stand-in puts `standin` where the
// commit goes, so a lenient parser reads both (dist/build-info.json has a commit too).
function versionLine() {
  return `OpenClaw ${installedVersion()} (standin)`;
}

function usage(message) {
  process.stderr.write(`${message ? `openclaw: ${message}\n` : ''}${USAGE}`);
  return 2;
}

const GATEWAY = {
  run: runGateway,
  start: (flags) => daemon.start(flags),
  stop: daemon.stop,
  restart: daemon.restart,
  status: daemon.status,
};

async function gatewayCommand(sub, flags) {
  const handler = GATEWAY[sub || 'run'];
  return handler ? handler(flags) : usage(`unknown gateway command: ${sub}`);
}

async function main(argv) {
  if (argv.length === 1 && ['-V', '-v', '--version'].includes(argv[0])) {
    process.stdout.write(`${versionLine()}\n`);
    return 0;
  }
  const { positionals, flags } = parseArgs(argv);
  const [command, sub, ...rest] = positionals;
  if (flags.version) {
    process.stdout.write(`${versionLine()}\n`);
    return 0;
  }
  switch (command) {
    case 'doctor': return runDoctor(flags);
    case 'health': return runHealth(flags);
    case 'gateway': return gatewayCommand(sub, flags);
    case 'update': return sub === 'status' ? runUpdateStatus(flags) : runUpdate(flags);
    case 'plugins': return runPlugins(sub, rest, flags);
    case 'config': return runConfig(sub, rest, flags);
    case 'backup': return runBackup(sub, rest, flags);
    case undefined: return flags.help ? (process.stdout.write(USAGE), 0) : usage('');
    default: return usage(`unknown command: ${command}`);
  }
}

module.exports = { main };
