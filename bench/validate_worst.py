"""`reconciler validate` on the worst inputs within the 1 MiB size cap: time and peak RSS.

The goal (issue 15): any input within the cap is validated or refused in under 2 s and 200 MB.
Each input is written to its own spec directory and validated by a fresh `python -m reconciler
validate --no-lock` child (through benchlib's selfusage, so RSS and CPU are the reconciler's
own); the first row, a small valid fleet, is the floor (interpreter start and imports).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import benchlib as b

HEAD = """name: bench
loadBalancer: {driver: file, address: /var/lib/reconciler/weights.json}
openclaw: {version: 2026.4.3, registry: "https://npm.example.net/"}
"""
CAP = 1024 * 1024


def small() -> str:
    return HEAD + "hosts:\n  - {name: gw-1, address: 10.0.0.1, user: openclaw, transport: local}\n"


def alias_levels() -> str:
    levels = "".join(
        f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    return HEAD + "x:\n  l0: &l0 /usr/bin\n" + levels + "hosts: [{path: *l9}]\n"


def hosts_times_profiles() -> str:
    return (
        HEAD
        + "x-p: &p {name: a}\nx-ps: &ps ["
        + ", ".join(["*p"] * 1000)
        + "]\nx-h: &h {name: gw, profiles: *ps}\nhosts: ["
        + ", ".join(["*h"] * 1000)
        + "]\n"
    )


def valid_near_node_cap() -> str:
    """750 local hosts of 3 profiles: about 19,500 values, every layer of validation runs."""
    hosts = "".join(
        f"  - name: gw-{i}\n    address: 10.{i // 250}.{i % 250}.1\n    user: openclaw\n"
        f"    transport: local\n    profiles:\n"
        + "".join(f"      - {{name: p{j}, port: {18000 + j}}}\n" for j in range(3))
        for i in range(750)
    )
    return HEAD + "hosts:\n" + hosts


def errors_near_node_cap() -> str:
    """2800 hosts whose user is wrong: 2800 schema errors to locate, sort and cap."""
    hosts = "".join(f"  - {{name: gw-{i}, address: 10.0.0.1, user: Bad}}\n" for i in range(2800))
    return HEAD + "hosts:\n" + hosts


def flow_list_past_node_cap() -> str:
    body = "x: [" + ",".join(["a"] * ((CAP - 600) // 2)) + "]\n"
    return HEAD + body


def lines_at_line_cap() -> str:
    return "#\n" * 49_980 + HEAD + "hosts: []\n"


def one_long_scalar() -> str:
    return HEAD + "hosts: [{name: " + "x" * (CAP - 400) + "}]\n"


def deep_flow() -> str:
    return HEAD + "hosts: " + "[" * (CAP - 400) + "\n"


INPUTS: dict[str, Callable[[], str]] = {
    "small valid fleet (the floor)": small,
    "9 levels of 10 aliases (2 KB)": alias_levels,
    "1000 aliased hosts x 1000 aliased profiles": hosts_times_profiles,
    "valid, 750 hosts x 3 profiles (~19.5k values)": valid_near_node_cap,
    "2800 hosts with a wrong user": errors_near_node_cap,
    "flow list of 500k values": flow_list_past_node_cap,
    "49,980 comment lines": lines_at_line_cap,
    "one 1 MiB scalar": one_long_scalar,
    "1 MiB of '['": deep_flow,
}


def measure(name: str, text: str, repeat: int) -> dict[str, object]:
    data = text.encode()
    assert len(data) <= CAP, (name, len(data))
    walls, cpus, rss, codes = [], [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fleet.yaml").write_bytes(data)
        for _ in range(repeat):
            done, wall, usage = b.run_measured(["validate", tmp, "--no-lock"], timeout=300)
            walls.append(wall)
            cpus.append(usage.cpu_s)
            rss.append(usage.maxrss_mib)
            codes.add(done.returncode)
    return {
        "input": name,
        "bytes": len(data),
        "exit": sorted(codes),
        "wall_s_median": b.median(walls),
        "cpu_s_median": b.median(cpus),
        "peak_rss_mib_max": max(rss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    b.start_load_sampler()
    rows = [measure(name, make(), args.repeat) for name, make in INPUTS.items()]
    print(
        b.table(
            ["input", "bytes", "exit", "wall s", "CPU s", "peak RSS MiB"],
            [
                [
                    r["input"],
                    r["bytes"],
                    ",".join(map(str, r["exit"])),  # type: ignore[call-overload]
                    b.s(float(r["wall_s_median"])),  # type: ignore[arg-type]
                    b.s(float(r["cpu_s_median"])),  # type: ignore[arg-type]
                    f"{float(r['peak_rss_mib_max']):.0f}",  # type: ignore[arg-type]
                ]
                for r in rows
            ],
        )
    )
    print(b.load_note())
    print(f"wrote {b.write_results('validate_worst', {'repeat': args.repeat, 'rows': rows})}")


if __name__ == "__main__":
    main()
