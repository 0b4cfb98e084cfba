"""What the LB command driver's commands see of the daemon's environment (issue 15, item 12).

The daemon's environment holds webhook secrets, registry tokens and the SSH agent's socket; an
LB command inherited all of it. Now it gets PATH, HOME and LANG, plus the variables its
configuration names, and nothing else. Each case runs a real command (a Python script that
records the environment it was given) through the driver.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from reconciler.lb.command import CommandLB

PROBE = """\
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
print(json.dumps({"mac-1": 100}))
"""
SECRETS = {
    "RECONCILER_FAULTS_WEBHOOK_SECRET": "whsec-never-in-an-lb-command",
    "NPM_TOKEN": "npm_NeverInAnLbCommand0123",
    "SSH_AUTH_SOCK": "/tmp/agent.never-in-an-lb-command",
    "AWS_SECRET_ACCESS_KEY": "aws-never-in-an-lb-command",
}

Seen = Callable[..., dict[str, str]]


@pytest.fixture
def seen(tmp_path: Path) -> Seen:
    """The environment the driver's `get` command ran with."""
    script, out = tmp_path / "probe.py", tmp_path / "env.json"
    script.write_text(PROBE)

    def run(env: dict[str, str] | None = None, pass_env: Sequence[str] = ()) -> dict[str, str]:
        get = [sys.executable, str(script), str(out)]
        lb = CommandLB({"get": get, "set": ["true"]}, env=env, pass_env=pass_env)
        assert lb.weights() == {"mac-1": 100}
        doc: dict[str, str] = json.loads(out.read_text())
        return doc

    return run


def test_the_daemons_secrets_never_reach_a_command(
    seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = seen()
    assert not set(SECRETS) & set(env)
    assert not any(value in env.values() for value in SECRETS.values())
    assert env["LANG"] == "C.UTF-8"


def test_a_command_gets_path_home_lang_and_nothing_else(seen: Seen) -> None:
    daemon = {"PATH": "/usr/bin:/bin", "HOME": "/home/reconciler", "LANG": "C.UTF-8", **SECRETS}
    env = seen(daemon)
    # LC_CTYPE: what Python itself sets in a C locale (PEP 538), not something passed to it
    assert set(env) - {"LC_CTYPE"} == {"PATH", "HOME", "LANG"}
    assert env["HOME"] == "/home/reconciler"


def test_a_variable_the_configuration_names_is_passed_and_only_that(seen: Seen) -> None:
    daemon = {"PATH": "/usr/bin:/bin", "LB_API_TOKEN": "lb-token", **SECRETS}
    env = seen(daemon, ["LB_API_TOKEN", "NOT_SET_ANYWHERE"])
    assert env["LB_API_TOKEN"] == "lb-token"
    assert "NOT_SET_ANYWHERE" not in env
    assert not set(SECRETS) & set(env)


def test_the_spec_names_what_its_commands_receive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loadBalancer.passEnv` in fleet.yaml reaches the driver built from the spec."""
    from reconciler.desired.spec import LoadBalancer
    from reconciler.lb import from_spec

    script, out = tmp_path / "probe.py", tmp_path / "env.json"
    script.write_text(PROBE)
    spec = LoadBalancer.model_validate(
        {
            "driver": "command",
            "commands": {"get": [sys.executable, str(script), str(out)], "set": ["true"]},
            "passEnv": ["LB_API_TOKEN"],
        }
    )
    monkeypatch.setenv("LB_API_TOKEN", "lb-token")
    monkeypatch.setenv("NPM_TOKEN", SECRETS["NPM_TOKEN"])
    assert from_spec(spec).weights() == {"mac-1": 100}
    env = json.loads(out.read_text())
    assert env["LB_API_TOKEN"] == "lb-token" and "NPM_TOKEN" not in env
