"""Terminal output: rich tables on a terminal, plain aligned text when piped, JSON for bots.

A reviewer should read a plan in ten seconds, so the table shows the diff first and then one
row per step, in execution order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from reconciler.errors import Problem
from reconciler.planner import Plan


def console(stream: IO[str] | None = None) -> Console:
    return Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)


def emit_json(value: Any, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def problems_text(problems: Sequence[Problem]) -> str:
    lines = [p.render() for p in problems]
    lines.append(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}")
    return "\n".join(lines)


def _duration(total: float) -> str:
    minutes, secs = divmod(int(total + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _step_detail(step: Any) -> str:
    if step.action == "install":
        return " then ".join(f"{p.name}@{p.version}" for p in step.packages)
    if step.action in ("drain", "ramp", "retire"):
        weights = ", ".join(f"{s}={w}" for s, w in step.weights.items())
        return f"{step.percent}%: {weights}" if weights else f"{step.percent}%"
    if step.action == "verify":
        return "doctor --post-upgrade, /readyz, running version"
    if step.action == "preflight":
        return "engines.node, free disk, registry reachable"
    if step.action == "bookmark":
        return "recovery point (openclaw backup), versions, weights"
    return ""


def plan_rows(plan: Plan) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    for i, step in enumerate(plan.steps, 1):
        soak = _duration(step.soak_s) if step.soak_s else ""
        hosts = ",".join(step.hosts)
        rows.append((str(i), hosts, step.action, _step_detail(step), soak))
    return rows


def change_lines(plan: Plan) -> list[str]:
    def arrow(before: str | None, after: str | None) -> str:
        return f"{before or '(none)'} -> {after or '(removed)'}"

    return [f"{c.kind:<13} {c.subject:<24} {arrow(c.before, c.after)}" for c in plan.changes]


def print_plan(
    plan: Plan, out: Console, *, out_of_service: Mapping[str, str] | None = None
) -> None:
    header = (
        f"fleet {plan.fleet}: {plan.strategy}, {len(plan.steps)} steps, "
        f"about {_duration(plan.expected_duration_s)}"
    )
    if plan.base_commit or plan.head_commit:
        header += f" ({(plan.base_commit or '')[:12]} -> {(plan.head_commit or '')[:12]})"
    out.print(header)
    if not plan.changed:
        out.print("no changes: nothing to roll out")
        return
    for line in change_lines(plan):
        out.print(f"  {line}")
    out.print(f"order: {' -> '.join(plan.order)}")
    out.print(f"availability: at most {plan.max_unavailable} host(s) out of service at once")
    for host, why in sorted((out_of_service or {}).items()):
        out.print(f"out of service: {host}: {why}; the rollout starts with it")
    if out.is_terminal:
        table = Table("#", "host", "action", "detail", "soak")
        for row in plan_rows(plan):
            table.add_row(*row)
        out.print(table)
    else:
        for row in plan_rows(plan):
            soak = f"  soak {row[4]}" if row[4] else ""
            out.print(f"{row[0]:>3}  {row[1]:<12} {row[2]:<9} {row[3]}{soak}")
    for warning in plan.warnings:
        out.print(f"warning: {warning}")


MARKDOWN_MARKER = "<!-- openclaw-reconciler plan: {fleet} -->"
"""The hidden first line of a plan comment: a workflow finds its own comment by it and updates
it in place instead of adding another."""


def plan_markdown(
    plan: Plan,
    roles: Mapping[str, str],
    *,
    out_of_service: Mapping[str, str] | None = None,
    notices: Sequence[str] = (),
) -> str:
    """The plan as one PR comment: the changes, the host order with roles, the steps folded
    per host, the estimate, and every warning (the plan's, and `notices`: a freeze in force, a
    maintenance window closed)."""
    lines = [MARKDOWN_MARKER.format(fleet=plan.fleet), f"### Rollout plan: fleet `{plan.fleet}`"]
    commits = (
        f" (`{(plan.base_commit or '-')[:12]}` → `{(plan.head_commit or '-')[:12]}`)"
        if plan.base_commit or plan.head_commit
        else ""
    )
    if not plan.changed:
        return "\n".join([*lines, "", f"No changes: nothing to roll out{commits}.", ""])
    lines += [
        "",
        f"{plan.strategy}, {len(plan.steps)} steps, about **{_duration(plan.expected_duration_s)}**"
        f"{commits}; at most {plan.max_unavailable} host(s) out of service at once.",
        "",
        "| change | subject | before | after |",
        "|---|---|---|---|",
        *(
            f"| {c.kind} | `{c.subject}` | {c.before or '(none)'} | {c.after or '(removed)'} |"
            for c in plan.changes
        ),
        "",
        "**Order:** " + " → ".join(f"{h} ({roles.get(h, '?')})" for h in plan.order),
        "",
    ]
    for host in dict.fromkeys(h for s in plan.steps for h in s.hosts):
        rows = [r for r in plan_rows(plan) if host in r[1].split(",")]
        lines += [f"<details><summary>{host}: {len(rows)} steps</summary>", ""]
        lines += ["| # | action | detail | soak |", "|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows]
        lines += ["", "</details>", ""]
    warnings = [
        *(f"{h} is out of service ({why}): the rollout starts with it"
          for h, why in sorted((out_of_service or {}).items())),
        *plan.warnings,
        *notices,
    ]  # fmt: skip
    lines += [f"> ⚠️ {w}" for w in warnings]
    return "\n".join(lines).rstrip() + "\n"
