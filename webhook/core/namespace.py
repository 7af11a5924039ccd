"""Parse a Namespace object (a raw dict) into the defaults it gives its RayClusters.

A tenant's Namespace carries the same `ray-ft-webhook.io/` annotations as a RayCluster; each is the default for
every RayCluster in it, below the RayCluster's own annotations and above the admin's flags. So a platform team
gives one tenant its own Redis, Secret and CA without a cluster-wide change. `ft-default` is the Namespace's
alone: GCS FT on for RayClusters created there without an FT setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from webhook.core import annotations as ann
from webhook.core.raycluster import OurAnnotations, parse_ours
from webhook.core.settings import quote


class FTDefault(StrEnum):
    """`ray-ft-webhook.io/ft-default` on a Namespace."""

    DISABLED = "disabled"
    ENABLED = "enabled"  # RayClusters of users and RayServices; not those of a RayJob (kuberay#4025)
    ENABLED_INCLUDING_RAYJOBS = "enabled-including-rayjobs"


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """The defaults a Namespace gives its RayClusters."""

    name: str
    ours: OurAnnotations = field(default_factory=OurAnnotations)
    ft_default: FTDefault = FTDefault.DISABLED
    errors: tuple[str, ...] = ()


def parse_namespace(obj: Any) -> NamespaceFacts:
    """Parse a Namespace dict. Never raises on content: problems end up in `errors`, each naming the
    annotation and its bad value."""
    errors: list[str] = []
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    annotations = metadata.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    name = metadata.get("name")
    ours = parse_ours(annotations, errors, allowed=ann.NAMESPACE_KEYS)
    ft_default = FTDefault.DISABLED
    raw = annotations.get(ann.FT_DEFAULT)
    if raw is not None:
        try:
            ft_default = FTDefault(raw.strip().lower() if isinstance(raw, str) else raw)
        except ValueError:
            errors.append(f"annotation {ann.FT_DEFAULT}: {quote(str(raw))} is not "
                          + ", ".join(f'"{v.value}"' for v in FTDefault))
    return NamespaceFacts(name=name if isinstance(name, str) else "", ours=ours, ft_default=ft_default,
                          errors=tuple(errors))
