"""Set one server's weight in a weights-file LB: `python bench/lb_weight.py FILE SERVER WEIGHT`.

The Ansible side of `rollout_overhead.py` drains and restores hosts with this (a task
delegated to localhost), through the same `WeightsFile` driver the reconciler and the floor use.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.lb.file import WeightsFile

if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.splitlines()[0], file=sys.stderr)
        raise SystemExit(2)
    WeightsFile(Path(sys.argv[1])).set_weight(sys.argv[2], int(sys.argv[3]))
