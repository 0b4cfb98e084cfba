"""The service manifests in deploy/: each parses, has what its service manager needs, and runs
a command line the CLI accepts.

A manifest is code nobody runs until the day it is needed: these tests parse each one the way
its consumer would (plistlib for launchd, an INI reader for the systemd unit, YAML for
Kubernetes, the Containerfile's instructions) and feed every command line to the real
`reconciler.cli.build_parser()`, so a renamed flag breaks here and not on a production Mac.
"""

from __future__ import annotations

import argparse
import configparser
import json
import plistlib
import re
import shlex
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from reconciler.cli import build_parser
from reconciler.serve.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG_KEYS = {
    "remote",
    "branch",
    "fleets",
    "cache",
    "pollInterval",
    "jitter",
    "http",
    "webhookSecrets",
    "sshKey",
}
PORT = 9410


def yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc is not None]


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def assert_cli_accepts(argv: list[str], config: str) -> None:
    """`argv` (without the program) is `run --config <config>` and the CLI parses it."""
    assert argv == ["run", "--config", config]
    parser = build_parser()
    assert "run" in subcommands(parser)
    args = parser.parse_args(argv)
    assert args.command == "run"
    assert args.config == config


def check_config(doc: dict[str, Any]) -> None:
    assert set(doc) == CONFIG_KEYS
    assert isinstance(doc["remote"], str) and doc["remote"]
    assert isinstance(doc["fleets"], list) and doc["fleets"]
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", f) for f in doc["fleets"])
    assert isinstance(doc["pollInterval"], int) and doc["pollInterval"] > 0
    assert isinstance(doc["jitter"], int) and doc["jitter"] >= 0
    assert set(doc["http"]) == {"bind", "port"} and doc["http"]["port"] == PORT
    assert set(doc["webhookSecrets"]) <= {"github", "gitea", "gitlab"}
    for ref in doc["webhookSecrets"].values():
        assert len(ref) == 1 and set(ref) <= {"env", "file"}  # a reference, never the secret
        if "env" in ref:
            assert not ref["env"].startswith("RECONCILER_")  # that prefix is for overrides
    assert set(doc["sshKey"]) == {"file"}


# --- the config --------------------------------------------------------------------------------


def test_the_example_config_has_exactly_the_documented_shape() -> None:
    path = DEPLOY / "config.example.yaml"
    (doc,) = yaml_docs(path)
    check_config(doc)
    assert doc["branch"] == "main"
    assert doc["http"]["bind"] == "127.0.0.1"  # loopback unless told otherwise
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    for key in (*CONFIG_KEYS, "http.bind", "http.port", "sshKey.file"):
        assert re.search(rf"^# {re.escape(key)}\b", text, re.M), f"{key} is not documented"
    assert "RECONCILER_" in text
    config = load_config(path, env={})  # the daemon's own loader accepts it as written
    assert config.fleets == doc["fleets"] and config.http.port == PORT


# --- launchd -------------------------------------------------------------------------------------


def test_launchd_plist() -> None:
    path = DEPLOY / "launchd" / "ai.openclaw.reconciler.plist"
    with path.open("rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == path.name.removesuffix(".plist")
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] in (True, {"SuccessfulExit": False})
    assert plist["ExitTimeOut"] >= 300  # SIGTERM lets the current step finish
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        assert plist[key].startswith("/")  # launchd expands no ~
    program, *argv = plist["ProgramArguments"]
    assert program.startswith("/") and program.endswith("/reconciler")
    assert_cli_accepts(argv, "/usr/local/etc/openclaw-reconciler/config.yaml")


# --- systemd -------------------------------------------------------------------------------------


def systemd_seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", value.strip())
    assert match, value
    return int(match.group(1)) * units[match.group(2)]


def test_systemd_unit_is_hardened_and_runs_the_daemon() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / "openclaw-reconciler.service").read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["CacheDirectory"] == "openclaw-reconciler"  # writable under strict
    assert service.get("User") not in (None, "root")
    assert service["KillMode"] == "mixed"  # SIGTERM to the reconciler, not to its children
    assert systemd_seconds(service["TimeoutStopSec"]) >= 300
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    program, *argv = shlex.split(service["ExecStart"])
    assert program.startswith("/") and program.endswith("/reconciler")
    assert_cli_accepts(argv, "/etc/openclaw-reconciler/config.yaml")


# --- the container -------------------------------------------------------------------------------


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (DEPLOY / "container" / "Containerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_runs_as_non_root_with_the_cli_as_entrypoint() -> None:
    steps = containerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    found = dict(steps)  # the last of each instruction wins, as in a build
    user = found["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert any(word == "RUN" and "pip install ." in rest for word, rest in steps)
    # trustedSigners (ssh-keygen, gpg) and an SSH spec remote (git, ssh) need their tools
    installs = " ".join(rest for word, rest in steps if word == "RUN" and "apt-get install" in rest)
    assert {"openssh-client", "git", "gnupg"} <= set(installs.split())
    assert found["EXPOSE"] == str(PORT)
    assert json.loads(found["ENTRYPOINT"]) == ["reconciler"]
    assert_cli_accepts(json.loads(found["CMD"]), "/config/config.yaml")


# --- Kubernetes ----------------------------------------------------------------------------------


def kubernetes() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml_docs(path):
            assert {"apiVersion", "kind"} <= set(doc), path
            objects[doc["kind"]] = doc
    return objects


def test_kubernetes_manifests(tmp_path: Path) -> None:
    objects = kubernetes()
    assert {"Deployment", "ConfigMap", "Service", "Kustomization"} <= set(objects)
    kustomized = set(objects["Kustomization"]["resources"])
    assert kustomized == {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {
        "kustomization.yaml"
    }

    deployment, config_map = objects["Deployment"], objects["ConfigMap"]
    assert deployment["spec"]["replicas"] == 2  # one acts, the lease keeps the other standing by
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 300
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    assert port["containerPort"] == PORT

    config_volume = next(v for v in pod["volumes"] if v.get("configMap"))
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == config_volume["name"])
    config_path = f"{mount['mountPath']}/config.yaml"
    (config,) = YAML(typ="safe").load_all(config_map["data"]["config.yaml"])
    check_config(config)
    assert config["http"]["bind"] == "0.0.0.0"  # the Service reaches the pod's address
    written = tmp_path / "config.yaml"
    written.write_text(config_map["data"]["config.yaml"])
    assert load_config(written, env={}).cache == "/cache"
    assert_secrets_are_references(pod, container, config)

    service = objects["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], PORT)
    assert_cli_accepts(container["args"], config_path)


def assert_secrets_are_references(
    pod: dict[str, Any], container: dict[str, Any], config: dict[str, Any]
) -> None:
    """Every secret the config names is an env var from a Secret or a file from a Secret
    volume; no manifest carries a secret's value."""
    env = {e["name"]: e for e in container.get("env", [])}
    secret_mounts = {
        m["mountPath"]
        for m in container["volumeMounts"]
        for v in pod["volumes"]
        if v["name"] == m["name"] and "secret" in v
    }
    refs = [*config["webhookSecrets"].values(), config["sshKey"]]
    for ref in refs:
        if "env" in ref:
            assert "secretKeyRef" in env[ref["env"]]["valueFrom"], ref
        else:
            assert str(Path(ref["file"]).parent) in secret_mounts, ref
    assert all("value" not in e for name, e in env.items() if "SECRET" in name or "TOKEN" in name)
