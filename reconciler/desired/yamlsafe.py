"""Reading a spec's YAML within bounds, because a spec is input anyone with push access writes.

YAML aliases make a small file a large document: ten levels of ten aliases each are 2 KB of text
and 10^10 nodes to every reader that walks the tree (JSON Schema, pydantic, line lookups). Deep
nesting overflows Python's stack in every recursive reader. And ruamel.yaml spends tens of
microseconds per token, so even 1 MiB of plain YAML can take far longer than a pass should.

So a spec is refused, with a location where it has one, before anything walks it:
- over MAX_BYTES or MAX_LINES: checked on the raw bytes, before the parser sees them;
- over MAX_NODES nodes counted as if every alias were expanded, over MAX_DEPTH levels (again
  with aliases expanded), an alias inside the node it names, or a number of more than
  MAX_DIGITS characters: checked while composing, so parsing stops at the first node too many.

Merge keys (`<<: *base`) stay what they were: an alias, counted at its expanded size.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.events import AliasEvent

MAX_BYTES = 1024 * 1024
MAX_LINES = 50_000
MAX_NODES = 20_000
MAX_DEPTH = 32
MAX_DIGITS = 64

_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")  # "\r\n" is one break: see line_count


class TooLarge(YAMLError):
    """The text is over a bound checked before parsing (no location: it is the whole file)."""


class OutOfBounds(MarkedYAMLError):
    """The document is over a bound found while composing it, at `problem_mark`."""

    def __init__(self, message: str, mark: StreamMark) -> None:
        super().__init__(problem=message, problem_mark=mark)


class BoundedComposer(Composer):
    """ruamel.yaml's composer, counting nodes and depth as a reader of the expanded tree sees
    them. Each anchored node remembers its expanded size and height, so an alias costs what
    the subtree it stands for costs."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0
        self.reach = 0  # the deepest level reached in the node being composed
        self.expanded: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (size, height)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            return self._alias(event)
        start, outer, level = self.nodes, self.reach, self.depth + 1
        self._count(1, level, event.start_mark)
        self.reach = level
        node = super().compose_node(parent, index)
        if node.anchor is not None:
            self.expanded[id(node)] = (self.nodes - start, self.reach - level)
        self.reach = max(outer, self.reach)
        return node

    def compose_scalar_node(self, anchor: Any) -> Any:
        node = super().compose_scalar_node(anchor)
        numeric = str(node.tag).endswith((":int", ":float"))
        if numeric and len(node.value) > MAX_DIGITS:
            size = f"{len(node.value)} characters; at most {MAX_DIGITS} expected"
            raise OutOfBounds(f"number too long ({size})", node.start_mark)
        return node

    def _alias(self, event: AliasEvent) -> Any:
        node = self.anchors.get(event.anchor)
        if node is None:
            return super().compose_node(None, None)  # ruamel's own "undefined alias" error
        if id(node) not in self.expanded:
            message = f"alias *{event.anchor} is inside the node it names (a cycle)"
            raise OutOfBounds(message, event.start_mark)
        size, height = self.expanded[id(node)]
        level = self.depth + 1
        self._count(size, level + height, event.start_mark)
        self.reach = max(self.reach, level + height)
        self.parser.get_event()
        return self.return_alias(node)

    def _count(self, size: int, level: int, mark: StreamMark) -> None:
        self.nodes += size
        if self.nodes > MAX_NODES:
            message = (
                f"document too large: more than {MAX_NODES} values with aliases expanded "
                "(a fleet spec needs far fewer; are aliases nested in aliases?)"
            )
            raise OutOfBounds(message, mark)
        if level > MAX_DEPTH:
            message = f"nested too deep: more than {MAX_DEPTH} levels with aliases expanded"
            raise OutOfBounds(message, mark)


def line_count(text: str) -> int:
    """Lines as YAML counts them (every YAML line break, not only \\n)."""
    return 1 + sum(text.count(b) for b in _BREAKS) - text.count("\r\n")


def check_size(data: bytes) -> None:
    """Refuse text over the byte cap before decoding it (the caller may know the size only)."""
    if len(data) > MAX_BYTES:
        raise TooLarge(f"file too large ({len(data)} bytes; at most {MAX_BYTES} expected)")


class _Memo(threading.local):
    """The last document read, per thread: source.py reads `ssh.knownHosts` from the very
    bytes validate.py then loads, and a second parse would double the cost of each."""

    data: bytes | None = None
    outcome: Any = None
    error: Exception | None = None


_memo = _Memo()


def load(data: bytes) -> Any:
    """The YAML document in `data` (round-trip types, with line and column of every node).

    Raises UnicodeDecodeError, TooLarge, OutOfBounds or another YAMLError. Callers must not
    change what it returns: the last document is shared with the next caller of the same bytes.
    """
    if _memo.data is None or _memo.data != data:
        _memo.data, _memo.outcome, _memo.error = None, None, None
        try:
            _memo.outcome = _load(data)
        except (UnicodeDecodeError, YAMLError) as exc:
            # Kept without its traceback, which would hold every frame of the parse alive.
            _memo.error = exc.with_traceback(None)
        _memo.data = data
    if _memo.error is not None:
        raise _memo.error.with_traceback(None)
    return _memo.outcome


def _load(data: bytes) -> Any:
    check_size(data)
    text = data.decode("utf-8")
    lines = line_count(text)
    if lines > MAX_LINES:
        raise TooLarge(f"too many lines ({lines}; at most {MAX_LINES} expected)")
    yaml = YAML(typ="rt")
    yaml.Composer = BoundedComposer
    yaml.allow_duplicate_keys = False
    return yaml.load(io.StringIO(text))
