'use strict';
// Fault injection, switchable per host without touching the code under test.
// The file is $OPENCLAW_STANDIN_FAULTS, else $HOME/.openclaw-standin/faults.json, and it is read
// again on every CLI invocation and on every gateway request. Format:
//   boolean faults (doctor_red, never_ready, crash_at_start, http_5xx, backup_refused;
//   crash_on_start is an older name of crash_at_start):
//       true                       -> active on every version
//       ["2026.4.4", ...]          -> active only while that version is the one running
//   numeric faults (ready_delay_s, doctor_delay_s, install_delay_s, ingress_pending):
//       2.5                        -> on every version
//       {"value": 2.5, "versions": ["2026.4.4"]} -> only on those versions
const fs = require('node:fs');
const path = require('node:path');
const { homeDir } = require('./state.js');

const BOOLEAN_FAULTS = [
  'doctor_red', 'never_ready', 'crash_at_start', 'crash_on_start', 'http_5xx', 'backup_refused',
];
const NUMERIC_FAULTS = ['ready_delay_s', 'doctor_delay_s', 'install_delay_s', 'ingress_pending'];

function faultsFile(env = process.env) {
  return env.OPENCLAW_STANDIN_FAULTS
    ? path.resolve(env.OPENCLAW_STANDIN_FAULTS)
    : path.join(homeDir(env), '.openclaw-standin', 'faults.json');
}

function loadFaults(env = process.env) {
  try {
    const parsed = JSON.parse(fs.readFileSync(faultsFile(env), 'utf8'));
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

function appliesTo(versions, version) {
  return Array.isArray(versions) ? versions.map(String).includes(version) : true;
}

// True when boolean fault `name` is on for `version`.
function isOn(name, version, faults = loadFaults()) {
  const value = faults[name];
  if (value === true) {
    return true;
  }
  return Array.isArray(value) && appliesTo(value, version);
}

// The value of numeric fault `name` for `version`, or `fallback` when it does not apply.
function numberFor(name, version, fallback, faults = loadFaults()) {
  const value = faults[name];
  if (typeof value === 'number' && Number.isFinite(value)) {
    return value;
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const n = Number(value.value);
    if (Number.isFinite(n) && appliesTo(value.versions, version)) {
      return n;
    }
  }
  return fallback;
}

function sleepSync(seconds) {
  if (seconds > 0) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.round(seconds * 1000));
  }
}

module.exports = {
  BOOLEAN_FAULTS, NUMERIC_FAULTS, faultsFile, loadFaults, isOn, numberFor, sleepSync,
};
