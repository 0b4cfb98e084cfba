'use strict';
// `openclaw doctor --json` and `openclaw doctor --post-upgrade --json`, in the real shapes.
// doctor: {schemaVersion: 1, ok, checksRun, checksSkipped, findings[]}, exit 0 once a report
// exists; a finding has checkId/severity/message (+ optional source, path, fixHint). A healthy
// host reports ONE warning (loopback bind), so `ok` is false there, exactly like the product.
// post-upgrade: {probesRun, findings}, findings as {level: warn|error, code, message, plugin?},
// exit 1 when an error-level finding exists.
const faults = require('./faults.js');
const { installedVersion } = require('./pkg.js');
const { trackedPlugins } = require('./plugins.js');
const state = require('./state.js');

const CHECKS_RUN = 35;
const CHECKS_SKIPPED = 30;
const POST_UPGRADE_PROBES = [
  'plugin.index_unavailable',
  'plugin.entry_unresolved',
  'plugin.manifest_drift',
  'plugin.version_drift',
];

function bindFinding() {
  return {
    checkId: 'gateway.bind.loopback',
    severity: 'warning',
    message: 'Gateway binds only to loopback',
  };
}

function configFindings(version, active) {
  const { error, file } = state.readConfig();
  const findings = [];
  if (error) {
    findings.push({
      checkId: 'config.parse',
      severity: 'error',
      message: `Config file does not parse: ${error}`,
      source: 'config',
      path: file,
      fixHint: 'Fix the JSON syntax, then rerun `openclaw doctor`.',
    });
  }
  if (faults.isOn('doctor_red', version, active)) {
    findings.push({
      checkId: 'config.schema.invalid',
      severity: 'error',
      message: `Config does not match the schema of OpenClaw ${version} (standin fault doctor_red)`,
      source: 'config',
      errorCode: 'CONFIG_SCHEMA_INVALID',
      path: file,
      ocPath: 'gateway',
      fixHint: 'Run `openclaw doctor --fix` or correct the config by hand.',
    });
  }
  return findings;
}

function doctorReport() {
  const version = installedVersion();
  const active = faults.loadFaults();
  faults.sleepSync(faults.numberFor('doctor_delay_s', version, 0, active));
  const findings = [bindFinding(), ...configFindings(version, active)];
  return {
    schemaVersion: 1,
    ok: findings.length === 0,
    checksRun: CHECKS_RUN,
    checksSkipped: CHECKS_SKIPPED,
    findings,
  };
}

// Drift of the tracked installs (a package npm-installed beside the core is not discovered).
function driftFindings(version) {
  return trackedPlugins()
    .filter((plugin) => plugin.status !== 'error')
    .filter((plugin) => plugin.version !== version)
    .map((plugin) => ({
      level: 'warn',
      code: 'plugin.version_drift',
      plugin: plugin.id,
      message: `Plugin ${plugin.id} is ${plugin.version}, but OpenClaw is ${version}. `
        + `Run \`openclaw plugins update ${plugin.id}\`, then restart the Gateway.`,
    }));
}

function postUpgradeReport() {
  const version = installedVersion();
  const active = faults.loadFaults();
  faults.sleepSync(faults.numberFor('doctor_delay_s', version, 0, active));
  const findings = driftFindings(version);
  if (faults.isOn('doctor_red', version, active)) {
    findings.push({
      level: 'error',
      code: 'plugin.entry_unresolved',
      plugin: 'standin',
      entry: 'index.js',
      message: `Plugin standin: extension entry does not resolve on OpenClaw ${version} `
        + '(standin fault doctor_red). Reinstall the plugin or run '
        + '`openclaw plugins registry --refresh`.',
    });
  }
  return { probesRun: [...POST_UPGRADE_PROBES], findings };
}

function printText(report) {
  const lines = report.findings.map((f) => `${(f.severity || f.level).toUpperCase()} `
    + `${f.checkId || f.code}: ${f.message}`);
  process.stdout.write(`${lines.length ? lines.join('\n') : 'No findings.'}\n`);
}

function runDoctor(flags) {
  if (flags['post-upgrade']) {
    const report = postUpgradeReport();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      printText(report);
    }
    return report.findings.some((f) => f.level === 'error') ? 1 : 0;
  }
  const report = doctorReport();
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    printText(report);
  }
  return 0;
}

module.exports = { runDoctor, doctorReport, postUpgradeReport };
