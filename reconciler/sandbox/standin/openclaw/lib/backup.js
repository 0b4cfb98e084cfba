'use strict';
// `openclaw backup create|verify|restore`, shaped like the product's (2026.9.x): a .tar.gz whose
// root holds `manifest.json` and `payload/posix/<absolute source path>`; `create --output P`
// writes the archive AS P when P does not exist (never overwrites); `restore --target T` only
// extracts into a fresh or empty T, outside the live state, never in place. Rebuildable roots
// (npm/, logs/) and volatile files (*.pid, *.sock, *.tmp) are left out, as the product does,
// so a restored state tracks its plugins but has no plugin code.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { isOn } = require('./faults.js');
const { installedVersion } = require('./pkg.js');
const state = require('./state.js');

const SKIPPED_ROOTS = new Set(['npm', 'logs', 'tmp']);
const VOLATILE = /\.(pid|sock|tmp)$/;
const TAR_TIMEOUT_MS = 120000;

function fail(flags, message) {
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: { type: 'cli_error', message } }, null, 2)}\n`);
  }
  process.stderr.write(`[openclaw] ${message}\n`);
  return 1;
}

function stamp(date) {
  return date.toISOString().replace(/:/g, '-').replace('Z', '+00-00');
}

function tar(args) {
  const done = spawnSync('tar', args, { encoding: 'utf8', timeout: TAR_TIMEOUT_MS });
  if (done.status !== 0) {
    throw new Error(`tar ${args[0]} failed: ${(done.stderr || '').trim() || done.status}`);
  }
  return done.stdout;
}

function plan(flags, now) {
  const dir = state.stateDir();
  const root = `${stamp(now)}-openclaw-backup`;
  const assets = fs.existsSync(dir) ? [{
    kind: 'state',
    sourcePath: dir,
    displayPath: dir.replace(state.homeDir(), '~'),
    archivePath: `${root}/payload/posix${dir}`,
  }] : [];
  return {
    createdAt: now.toISOString(),
    archiveRoot: root,
    includeWorkspace: !flags['no-include-workspace'],
    onlyConfig: false,
    assets,
    agentRoots: [],
    skipped: [],
    skippedVolatileCount: 0,
  };
}

function copyState(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (SKIPPED_ROOTS.has(entry.name) && from === state.stateDir()) continue;
    if (VOLATILE.test(entry.name)) continue;
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) copyState(src, dst);
    else if (entry.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(src), dst);
    else if (entry.isFile()) fs.copyFileSync(src, dst);
  }
}

function outputPath(flags, root) {
  const wanted = typeof flags.output === 'string' ? path.resolve(flags.output) : process.cwd();
  const isDir = fs.existsSync(wanted) && fs.statSync(wanted).isDirectory();
  return isDir ? path.join(wanted, `${root}.tar.gz`) : wanted;
}

function create(flags) {
  if (isOn('backup_refused', installedVersion())) {
    // The product refuses a state it cannot archive safely (unresolved includes, changing files).
    return fail(flags, 'Backup refused: config include graph cannot be resolved (fault injected).');
  }
  const report = plan(flags, new Date());
  const archivePath = outputPath(flags, report.archiveRoot);
  const live = state.stateDir();
  if (archivePath === live || archivePath.startsWith(`${live}${path.sep}`)) {
    return fail(flags, `Backup output ${archivePath} is inside the source tree ${live}.`);
  }
  if (flags['dry-run']) {
    return emit({ ...report, archivePath, dryRun: true, verified: false });
  }
  if (fs.existsSync(archivePath)) {
    return fail(flags, `Refusing to overwrite existing backup archive: ${archivePath}`);
  }
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'openclaw-backup-owned-'));
  try {
    for (const asset of report.assets) {
      copyState(asset.sourcePath, path.join(scratch, asset.archivePath));
    }
    const manifest = {
      schemaVersion: 1,
      createdAt: report.createdAt,
      archiveRoot: report.archiveRoot,
      runtimeVersion: installedVersion(),
      platform: process.platform,
      nodeVersion: process.version,
      options: { includeWorkspace: report.includeWorkspace, onlyConfig: false },
      paths: { stateDir: live, configPath: state.configPath() },
      assets: report.assets.map(({ displayPath, ...asset }) => asset),
      skipped: [],
      externalSymbolicLinks: [],
    };
    fs.mkdirSync(path.join(scratch, report.archiveRoot), { recursive: true });
    fs.writeFileSync(path.join(scratch, report.archiveRoot, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    fs.mkdirSync(path.dirname(archivePath), { recursive: true });
    const partial = `${archivePath}.${process.pid}.partial`;
    tar(['-czf', partial, '-C', scratch, report.archiveRoot]);
    fs.chmodSync(partial, 0o600);
    fs.linkSync(partial, archivePath); // no-overwrite publication, as the product
    fs.unlinkSync(partial);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  if (flags.verify) {
    const problem = verifyArchive(archivePath).problem;
    if (problem) return fail(flags, problem);
  }
  return emit({ ...report, archivePath, dryRun: false, verified: Boolean(flags.verify) });
}

function verifyArchive(archivePath) {
  let entries;
  try {
    entries = tar(['-tzf', archivePath]).split('\n').filter(Boolean);
  } catch (err) {
    return { problem: `Archive ${archivePath} cannot be read: ${err.message}` };
  }
  const manifests = entries.filter((e) => /^[^/]+\/manifest\.json$/.test(e));
  if (manifests.length !== 1) {
    return { problem: `Archive ${archivePath} must hold exactly one root manifest.json` };
  }
  if (entries.some((e) => e.startsWith('/') || e.split('/').includes('..'))) {
    return { problem: `Archive ${archivePath} has traversal-style paths` };
  }
  const root = manifests[0].split('/')[0];
  const manifest = JSON.parse(tar(['-xzOf', archivePath, manifests[0]]));
  return { root, manifest, entries };
}

function verify(args, flags) {
  const archivePath = path.resolve(args[0] || '');
  const checked = verifyArchive(archivePath);
  if (checked.problem) return fail(flags, checked.problem);
  return emit({
    ok: true, archivePath, archiveRoot: checked.root, createdAt: checked.manifest.createdAt,
    runtimeVersion: checked.manifest.runtimeVersion, assetCount: checked.manifest.assets.length,
    entryCount: checked.entries.length, symlinkCount: 0,
  });
}

function restore(args, flags) {
  const archivePath = path.resolve(args[0] || '');
  if (typeof flags.target !== 'string') return fail(flags, 'backup restore needs --target <fresh dir>');
  const target = path.resolve(flags.target);
  const live = state.stateDir();
  if (target === live || target.startsWith(`${live}${path.sep}`)) {
    return fail(flags, `Restore target ${target} is inside the live state directory ${live}.`);
  }
  if (fs.existsSync(target) && fs.readdirSync(target).length > 0) {
    return fail(flags, `Restore target ${target} is not empty.`);
  }
  const checked = verifyArchive(archivePath);
  if (checked.problem) return fail(flags, checked.problem);
  fs.mkdirSync(target, { recursive: true });
  try {
    tar(['-xzf', archivePath, '-C', target]);
  } catch (err) {
    fs.rmSync(target, { recursive: true, force: true });
    return fail(flags, err.message);
  }
  return emit({
    ok: true, archivePath, archiveRoot: checked.root, createdAt: checked.manifest.createdAt,
    runtimeVersion: checked.manifest.runtimeVersion, assetCount: checked.manifest.assets.length,
    entryCount: checked.entries.length, symlinkCount: 0, targetPath: target,
    warnings: ['Restoring an archive is time travel: every restored state surface rolls back to the archive timestamp.'],
  });
}

function emit(report) {
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return 0;
}

function runBackup(sub, args, flags) {
  try {
    switch (sub) {
      case 'create': return create(flags);
      case 'verify': return verify(args, flags);
      case 'restore': return restore(args, flags);
      default: return fail(flags, `unknown backup command: ${sub || ''}`);
    }
  } catch (err) {
    return fail(flags, String(err.message || err));
  }
}

module.exports = { runBackup };
