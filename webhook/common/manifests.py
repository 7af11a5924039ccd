"""Reading Kubernetes objects from YAML or JSON files (for `render` and `--rayclusters-from`).

Every file is bounded before it is trusted: at most MAX_BYTES, no YAML aliases (a few lines of nested aliases
expand to billions of nodes, and a self-referencing one never ends), nesting at most MAX_DEPTH, and only what
JSON can hold (string keys, int64 numbers). Anything else is an InputError naming the file: one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from webhook.common.errors import InputError

# The apiserver refuses requests over 3 MiB, so no Kubernetes object is larger.
MAX_BYTES = 3 * 1024 * 1024
# A RayCluster's pod template is about 15 levels deep; 100 leaves room and keeps every recursion shallow.
MAX_DEPTH = 100
_INT64 = range(-(2**63), 2**63)

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is several times faster


class _Loader(_BaseLoader):
    """The safe loader without YAML 1.1 timestamps: `2024-01-01` stays a string, as kubectl reads it."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MiB, the apiserver's limit for an object")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""


def _check_events(path: Path, text: str) -> None:
    """Refuse aliases and deep nesting from the event stream, before anything is composed (libyaml's composer
    recurses per level and follows every alias)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise InputError(f"{path}: YAML aliases (*{event.anchor}) are not accepted in manifests (line {line})")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _documents(path: Path, text: str) -> list[Any]:
    if text.lstrip()[:1] in ("{", "["):
        # JSON first: YAML refuses JSON's escaped surrogate pairs (`"\ud83d\ude00"`, what json.dumps writes).
        try:
            return [orjson.loads(text)]
        except orjson.JSONDecodeError:
            pass
    try:
        _check_events(path, text)
        return list(yaml.load_all(text, Loader=_Loader))
    except InputError:
        raise
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML or JSON{_line(exc)}") from None
    except ValueError as exc:  # e.g. an integer of more digits than int() converts
        raise InputError(f"{path}: not valid YAML or JSON: {exc}") from None


def _at(where: str) -> str:
    return repr(where[:80]) if where else "the top"


def _check_values(path: Path, doc: Any) -> None:
    """Only what a Kubernetes object (JSON) can hold; iterative, so no recursion limit is involved."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise InputError(f"{path}: key {str(key)[:40]!r} at {_at(where)} is not a string; quote it")
                stack.append((value, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(node))
        elif isinstance(node, bool | float | str) or node is None:
            continue
        elif isinstance(node, int):
            if node not in _INT64:
                raise InputError(f"{path}: the number at {_at(where)} is out of the 64-bit range")
        else:
            raise InputError(f"{path}: the value at {_at(where)} is a {type(node).__name__}, not JSON")


def load_objects(path: Path) -> list[dict[str, Any]]:
    """Every object in a YAML (multi-document) or JSON file; `kind: List` items are flattened."""
    documents = [d for d in _documents(path, _read(path)) if d is not None]
    objects: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise InputError(f"{path}: expected Kubernetes objects, found a {type(doc).__name__}")
        _check_values(path, doc)
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            objects.extend(item for item in doc["items"] if isinstance(item, dict))
        else:
            objects.append(doc)
    return objects


def load_one(path: Path, kind: str) -> dict[str, Any]:
    """The single object of `kind` in `path`."""
    found = [o for o in load_objects(path) if o.get("kind") == kind]
    if len(found) != 1:
        raise InputError(f"{path}: expected exactly one {kind}, found {len(found)}")
    return found[0]
