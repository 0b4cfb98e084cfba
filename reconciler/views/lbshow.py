"""`reconciler lb show`: the load balancer as the reconciler sees it.

During an incident the first question is "where is traffic going?". This prints what the
driver reads (weights, status, current sessions, requests, 5xx) and nothing else, so what the
operator sees is exactly what the rollout engine would act on: a table on a terminal, aligned
plain text when piped, and rows of plain dicts for `--json`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from reconciler.lb import LoadBalancer, ServerStats

COLUMNS = ("server", "weight", "status", "sessions", "requests", "5xx", "5xx %")


def lb_rows(lb: LoadBalancer, servers: Sequence[str] | None = None) -> list[dict[str, object]]:
    """One dict per server (all of them, or `servers` in that order; unknown ones marked)."""
    stats = lb.stats()
    names = list(servers) if servers is not None else sorted(stats)
    return [_row(name, stats.get(name)) for name in names]


def _row(name: str, stats: ServerStats | None) -> dict[str, object]:
    if stats is None:
        return {
            "server": name,
            "weight": None,
            "status": "not in LB",
            "sessions": None,
            "requests": None,
            "responses5xx": None,
            "ratio5xx": None,
        }
    ratio = stats.responses_5xx / stats.requests if stats.requests else 0.0
    return {
        "server": name,
        "weight": stats.weight,
        "status": stats.status,
        "sessions": stats.sessions,
        "requests": stats.requests,
        "responses5xx": stats.responses_5xx,
        "ratio5xx": round(ratio, 4),
    }


def _cells(row: dict[str, object]) -> tuple[str, ...]:
    def text(value: object) -> str:
        return "-" if value is None else str(value)

    ratio = row["ratio5xx"]
    percent = f"{ratio:.1%}" if isinstance(ratio, float) else "-"
    return (
        str(row["server"]),
        text(row["weight"]),
        str(row["status"]),
        text(row["sessions"]),
        text(row["requests"]),
        text(row["responses5xx"]),
        percent,
    )


def print_rows(rows: Sequence[dict[str, object]], out: Console) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    if not rows:
        out.print("the load balancer lists no servers")
        return
    cells = [_cells(row) for row in rows]
    if out.is_terminal:
        table = Table(*COLUMNS, box=None)
        for row in cells:
            table.add_row(*row)
        out.print(table)
        return
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    for line in [COLUMNS, *cells]:
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        out.print(text, markup=False, highlight=False)


def show(lb: LoadBalancer, console: Console, servers: Sequence[str] | None = None) -> None:
    """Print the current weights and counters of `lb` (what `reconciler lb show` prints)."""
    print_rows(lb_rows(lb, servers), console)
