"""The command line's exit codes, in one place because they are part of the interface (CI and
bots read them) and every command module returns them:
0 ok (and for `plan`: nothing changes), 1 internal error, 2 invalid input,
3 `plan` found changes (`reconcile --once`: not settled yet).
"""

from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_INVALID, EXIT_CHANGES = 0, 1, 2, 3
