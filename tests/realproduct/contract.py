"""The shape of what the product prints, and of what the stand-in prints, compared.

`shape(doc)` flattens a JSON document to the set of `path: type` it holds (list items under
`[]`, all items merged), so two outputs compare by structure, not by values. The stand-in may
print less than the product (it does not model every channel or check), never something the
product does not print, nor a field under another type: a parser written against the stand-in
would then meet a product that has no such thing.
"""

from __future__ import annotations

from typing import Any

JSON_TYPES = {bool: "bool", int: "number", float: "number", str: "string", type(None): "null"}


def shape(doc: Any, path: str = "") -> set[str]:
    """Every `path: type` in a JSON value."""
    if isinstance(doc, dict):
        found = {f"{path}: object"}
        for key, value in doc.items():
            found |= shape(value, f"{path}.{key}")
        return found
    if isinstance(doc, list):
        found = {f"{path}: array"}
        for item in doc:
            found |= shape(item, f"{path}[]")
        return found
    return {f"{path}: {JSON_TYPES.get(type(doc), type(doc).__name__)}"}


def invented(standin: Any, *product: Any) -> list[str]:
    """What the stand-in prints that the product does not, in any of the outputs given (one
    per release: a field a later release added counts); a path, or a path under another type.
    A value null on one side is not a type of its own."""
    real = set().union(*(shape(doc) for doc in product))
    real_paths = {entry.rsplit(": ", 1)[0] for entry in real}
    wrong = []
    for entry in sorted(shape(standin)):
        path, kind = entry.rsplit(": ", 1)
        if entry in real or (kind == "null" and path in real_paths):
            continue
        if f"{path}: null" in real:
            continue
        wrong.append(entry if path in real_paths else f"{entry} (the product has no {path})")
    return wrong
