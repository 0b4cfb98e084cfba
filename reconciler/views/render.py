"""Terminal output: rich tables on a terminal, plain aligned text when piped, JSON for bots.

A reviewer should read a plan in ten seconds, so the table shows the diff first and then one
row per step, in execution order.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from reconciler.errors import Problem
from reconciler.rollout.planner import Change, Plan, Step


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

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_SCOPED_NAME = re.compile(r"(?<![\w`])@[a-z0-9][\w.-]*/[\w.-]*\w(?:@[\w.+-]*\w)?")


def _cell(text: str) -> str:
    """Text for a table cell: a `|` (even in a code span) would end the cell."""
    return text.replace("|", "\\|")


def _unmentioned(text: str) -> str:
    """`text` with npm scoped names (`@openclaw/matrix@2026.4.3`) in code spans, outside the
    code spans it has: bare, GitHub reads them as team mentions and notifies the team."""
    parts = _CODE_SPAN.split(text)
    parts[::2] = [_SCOPED_NAME.sub(lambda m: f"`{m.group(0)}`", p) for p in parts[::2]]
    return "".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _change_cells(change: Change) -> tuple[str, str]:
    """The before and after cells of one change (a host added or removed has no versions)."""
    if change.kind == "host-added":
        return "(none)", "(added)"
    if change.kind == "host-removed":
        return "(in the fleet)", "(removed)"
    return change.before or "(none)", change.after or "(removed)"


def _markdown_detail(step: Step) -> str:
    if step.action == "install":
        return " then ".join(f"`{p.name}@{p.version}`" for p in step.packages)
    return _step_detail(step)


def _folds(plan: Plan) -> list[str]:
    """The steps in execution order, one folded table per run of steps on the same hosts:
    per host when rolling, once for the whole fleet when all at once."""
    lines: list[str] = []
    numbered = enumerate(plan.steps, 1)
    for hosts, run in itertools.groupby(numbered, key=lambda item: tuple(item[1].hosts)):
        rows = [
            f"| {i} | {step.action} | {_cell(_markdown_detail(step))} | "
            f"{_duration(step.soak_s) if step.soak_s else ''} |"
            for i, step in run
        ]
        summary = f"{', '.join(hosts)}: {_count(len(rows), 'step')}"
        lines += [f"<details><summary>{summary}</summary>", ""]
        lines += ["| # | action | detail | soak |", "|---|---|---|---|", *rows]
        lines += ["", "</details>", ""]
    return lines


def plan_markdown(
    plan: Plan,
    roles: Mapping[str, str],
    *,
    out_of_service: Mapping[str, str] | None = None,
    notices: Sequence[str] = (),
) -> str:
    """The plan as one PR comment: the changes, the host order with roles, the steps folded
    per host (in execution order), the estimate, and every warning, each its own paragraph
    (hosts out of service, the plan's, and `notices`: a freeze in force, a maintenance window
    closed)."""
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
        f"{plan.strategy}, {_count(len(plan.steps), 'step')}, about "
        f"**{_duration(plan.expected_duration_s)}**{commits}; at most {plan.max_unavailable} "
        "host(s) out of service at once.",
        "",
        "| change | subject | before | after |",
        "|---|---|---|---|",
        *(
            f"| {c.kind} | `{_cell(c.subject)}` | "
            + " | ".join(_cell(cell) for cell in _change_cells(c))
            + " |"
            for c in plan.changes
        ),
        "",
        "**Order:** " + " → ".join(f"{h} ({roles.get(h, '?')})" for h in plan.order),
        "",
        *_folds(plan),
    ]
    warnings = [
        *(f"{h} is out of service: {why}; the rollout starts with it"
          for h, why in sorted((out_of_service or {}).items())),
        *plan.warnings,
        *notices,
    ]  # fmt: skip
    # One blockquote, one paragraph per warning: consecutive `>` lines would run together.
    lines += "\n>\n".join(f"> ⚠️ {_unmentioned(w)}" for w in warnings).splitlines()
    return "\n".join(lines).rstrip() + "\n"
