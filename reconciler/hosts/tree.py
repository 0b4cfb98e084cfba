"""The installed global npm tree, read from the package.json files on disk.

Why not `npm ls`: it is npm's own view and the reference (facts.npm_tree keeps it, and the tests
check that both agree on real installs), but it costs ~0.4 s of CPU on the host per call: npm
loads its whole CLI and arborist to print what a few package.json files say. The reconciler
reads the tree several times per host and per rollout (observe, before and after every
install), so that cost was most of a rollout's overhead over a plain SSH loop.

One `node -e` process reads, under `<prefix>/lib/node_modules`: every top-level package (name,
version, dependency and peer ranges, and what each of those edges resolves to, the way Node
resolves it from the package), every nested copy of openclaw at any depth, the Node version
running it and the free space under the prefix (`fs.statfsSync`, Node >= 18.15). The ranges
are judged here, in Python, with the same node-semver rules as everywhere else, and problems
are worded the way `npm ls` words them (`invalid: openclaw@2026.4.3 node_modules/openclaw`,
`missing: x@^1, required by y@2`), so a readiness document does not change with the reader.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.desired.spec import CORE
from reconciler.desired.versions import parse_node_version, satisfies, valid_range
from reconciler.hosts.transport import CommandResult
from reconciler.record.documents import Installed

VERSION = re.compile(r"[0-9A-Za-z.+-]{1,64}")
NAME = re.compile(r"(@[A-Za-z0-9][A-Za-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*")
"""npm's legacy names too (uppercase): other global packages are listed, never touched."""
MAX_DIRS = 50_000
"""Directories the copy search visits at most (a real openclaw install has ~1,000)."""

# `readTree(mods, prefix, maxDirs)`: mods = <prefix>/lib/node_modules, prefix (for the free
# space), maxDirs = MAX_DIRS -> {node, packages: [...], copies: [...], disk, truncated}.
TREE_FUNCTION = (
    "const fs=require('fs'),path=require('path');"
    "const readTree=(mods,prefix,maxDirs)=>{let dirs=0,truncated=false;"
    "const read=(d)=>{try{return JSON.parse(fs.readFileSync(path.join(d,'package.json'),'utf8'))}"
    "catch(e){return(e.code==='ENOENT'||e.code==='ENOTDIR')?null:{__error:String(e.message)"
    ".slice(0,200)}}};"
    "const names=(d)=>{const out=[];let es=[];try{es=fs.readdirSync(d,{withFileTypes:true})}"
    "catch(e){return out}for(const e of es){if(e.name[0]==='.')continue;"
    "if(e.name[0]==='@'){let ss=[];try{ss=fs.readdirSync(path.join(d,e.name))}catch(x){}"
    "for(const s of ss)if(s[0]!=='.')out.push(e.name+'/'+s)}else out.push(e.name)}return out};"
    "const at=(dir,name)=>{for(const c of[path.join(dir,'node_modules',name),path.join(mods,name)])"
    "{const p=read(c);if(p)return{version:typeof p.version==='string'?p.version:null,"
    "path:path.relative(path.dirname(mods),c)}}return null};"
    "const packages=[],copies=[];"
    "for(const name of names(mods)){const dir=path.join(mods,name);const p=read(dir);"
    "if(!p)continue;if(p.__error){packages.push({name,error:p.__error});continue}"
    "const deps=p.dependencies||{},peers=p.peerDependencies||{},meta=p.peerDependenciesMeta||{};"
    "const optional=Object.keys(p.optionalDependencies||{})"
    ".concat(Object.keys(meta).filter((k)=>meta[k]&&meta[k].optional));const found={};"
    "for(const n of Object.keys(deps).concat(Object.keys(peers)))found[n]=at(dir,n);"
    "packages.push({name,version:p.version,deps,peers,optional,found});"
    "const queue=[path.join(dir,'node_modules')];"
    "while(queue.length){const nm=queue.pop();if(++dirs>Number(maxDirs)){truncated=true;break}"
    "for(const n of names(nm)){const d=path.join(nm,n);"
    "if(n==='openclaw'){const q=read(d);"
    "copies.push(path.relative(path.dirname(mods),d)+'@'+(q&&q.version))}"
    "queue.push(path.join(d,'node_modules'))}}}"
    "let disk=null;if(fs.statfsSync){let p=prefix;while(!fs.existsSync(p))p=path.dirname(p);"
    "const s=fs.statfsSync(p);disk={path:p,availableKb:Math.floor(s.bavail*s.bsize/1024)}}"
    "return{node:process.version,packages,copies,disk,truncated}};"
)
# argv: mods, prefix, maxDirs. Prints readTree's object as one line of JSON.
TREE_SCRIPT = (
    TREE_FUNCTION
    + "process.stdout.write(JSON.stringify(readTree(...process.argv.slice(1)))+'\\n');"
)


class TreeError(ValueError):
    """The reader's output is not what the script prints (the caller names host and command)."""


@dataclass(frozen=True)
class HostTree:
    """What one read of the tree tells: the tree, and the Node and free space beside it."""

    installed: Installed
    node_version: str | None
    available_kb: int | None
    disk_path: str | None


def argv(prefix: str, max_dirs: int = MAX_DIRS) -> tuple[str, ...]:
    return ("node", "-e", TREE_SCRIPT, "--", *arguments(prefix, max_dirs))


def arguments(prefix: str, max_dirs: int = MAX_DIRS) -> tuple[str, str, str]:
    """readTree's arguments for the npm prefix `prefix`."""
    return (posixpath.join(prefix, "lib", "node_modules"), prefix, str(max_dirs))


def parse(doc: Mapping[str, Any]) -> HostTree:
    """The script's JSON object -> HostTree; TreeError on any shape it does not print."""
    packages = _list(doc, "packages")
    versions: dict[str, str] = {}
    problems: list[str] = []
    for entry in packages:
        if not isinstance(entry, dict):
            raise TreeError("a package entry is not an object")
        name = _name(entry)
        if "error" in entry:
            problems.append(f"invalid package.json of {name}: {entry['error']}")
            continue
        version = entry.get("version")
        if not isinstance(version, str) or not VERSION.fullmatch(version):
            raise TreeError(f"{name} has no valid version: {str(version)[:80]!r}")
        versions[name] = version
        problems += _edge_problems(name, entry)
    copies = [str(c) for c in _list(doc, "copies")]
    if doc.get("truncated"):
        problems.append(f"the copy search stopped after {MAX_DIRS} directories")
    disk = doc.get("disk")
    node = doc.get("node")
    return HostTree(
        installed=Installed(
            core=versions.get(CORE),
            plugins={n: v for n, v in sorted(versions.items()) if n != CORE},
            duplicates=sorted(set(copies)),
            problems=list(dict.fromkeys(problems)),
        ),
        node_version=parse_node_version(node) if isinstance(node, str) else None,
        available_kb=_int(disk.get("availableKb")) if isinstance(disk, dict) else None,
        disk_path=str(disk.get("path")) if isinstance(disk, dict) else None,
    )


def _edge_problems(name: str, entry: Mapping[str, Any]) -> list[str]:
    """npm ls's problems for one top-level package's dependency and peer edges."""
    version = entry.get("version")
    optional = set(_list(entry, "optional"))
    found = entry.get("found")
    if not isinstance(found, dict):
        raise TreeError(f"package {name}: `found` is not an object")
    out = []
    for kind in ("deps", "peers"):
        edges = entry.get(kind)
        if not isinstance(edges, dict):
            raise TreeError(f"package {name}: `{kind}` is not an object")
        for dep, wanted in edges.items():
            if not isinstance(wanted, str) or not valid_range(wanted):
                continue  # tags, git URLs, aliases: npm's own business, not a version range
            target = found.get(dep)
            if not isinstance(target, dict):
                if dep not in optional:
                    out.append(f"missing: {dep}@{wanted}, required by {name}@{version}")
                continue
            have = target.get("version")
            if not isinstance(have, str) or not satisfies(have, wanted):
                out.append(f"invalid: {dep}@{have} {target.get('path')}")
    return out


def parse_result(result: CommandResult, text: str) -> HostTree:
    """Decode the script's output (already bounded and decoded by the caller)."""
    if not result.ok:
        raise TreeError(f"the tree reader exited {result.exit_code}")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TreeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TreeError("not a JSON object")
    return parse(doc)


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise TreeError(f"`{key}` is not a list")
    return value


def _name(doc: Mapping[str, Any]) -> str:
    value = doc.get("name")
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise TreeError(f"not a package name: {str(value)[:80]!r}")
    return value


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
