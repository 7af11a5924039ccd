"""Reading Kubernetes objects from YAML or JSON files (for `render` and `--rayclusters-from`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from webhook.common.errors import InputError


def load_objects(path: Path) -> list[dict[str, Any]]:
    """Every object in a YAML (multi-document) or JSON file; `kind: List` items are flattened."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        # JSON is YAML; CSafeLoader is several times faster where libyaml is available.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        documents = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML or JSON{where}") from None
    objects: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise InputError(f"{path}: expected Kubernetes objects, found a {type(doc).__name__}")
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
