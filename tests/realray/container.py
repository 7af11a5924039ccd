"""The Kubernetes side of a real-Ray node: the Ray container of a rendered pod (its env, its `args[0]` line
and its volume mounts), the env a kubelet would hand it (`valueFrom` resolved, `$(VAR)` expanded), the files
of its Secret and ConfigMap volumes and the editing of its `ray start` flags. Nothing here runs anything."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

Role = Literal["head", "worker"]
# {(secret name, key): value}: what a secretKeyRef resolves to, and the file a Secret volume projects for the key.
Secrets = Mapping[tuple[str, str], str]
# {(config map name, key): value}: the same for ConfigMaps.
ConfigMaps = Mapping[tuple[str, str], str]


class HarnessError(RuntimeError):
    """Setting up or driving the local cluster failed; the message says what and where the logs are."""



@dataclass(frozen=True)
class Container:
    """The parts of a rendered pod's Ray container that decide how Ray starts: `env`, `args[0]` and the files
    its volume mounts show it."""

    env: tuple[Mapping[str, Any], ...]
    command: str
    # Pod facts a fieldRef may read (metadata.name, metadata.namespace, ...).
    pod_metadata: Mapping[str, Any] = field(default_factory=dict)
    # The container's volumeMounts and the pod's volumes they name.
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> Container:
        """Read `spec.containers[0]` (KubeRay's Ray container) of a pod dict."""
        container = pod["spec"]["containers"][0]
        args = container.get("args") or []
        if not args or not isinstance(args[0], str):
            raise HarnessError("the Ray container has no args[0] command line")
        return cls(env=tuple(container.get("env") or ()), command=args[0], pod_metadata=pod.get("metadata", {}),
                   volume_mounts=tuple(container.get("volumeMounts") or ()),
                   volumes=tuple(pod["spec"].get("volumes") or ()))

    def env_value(self, name: str) -> str | None:
        """The literal value of env var `name`, or None (absent or from valueFrom)."""
        for item in self.env:
            if item["name"] == name and "valueFrom" not in item:
                return str(item.get("value", ""))
        return None

    def with_env(self, name: str, value: str | None) -> Container:
        """A copy with env `name` set to `value` (None removes it): for the negative controls."""
        kept = [dict(item) for item in self.env if item["name"] != name]
        if value is not None:
            kept.append({"name": name, "value": value})
        return replace(self, env=tuple(kept))

    def without(self, env_names: Sequence[str] = (), flags: Sequence[str] = ()) -> Container:
        """A copy without the given env vars and `ray start` flags."""
        command = self.command
        for flag in flags:
            command = remove_flag(command, flag)
        env = tuple(item for item in self.env if item["name"] not in env_names)
        return replace(self, env=env, command=command)


_K8S_VAR_REF = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_.-]*)\))")


def _expand_k8s(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in env values: earlier vars only; `$$` escapes; unknown refs stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2)
        return defined.get(name, match.group(0))

    return _K8S_VAR_REF.sub(one, value)


def _field_ref(path: str, metadata: Mapping[str, Any]) -> str:
    """The value of a downward-API fieldRef; the pod's IPs are loopback here."""
    if path in ("status.podIP", "status.hostIP", "status.podIPs"):
        return "127.0.0.1"
    if path == "spec.nodeName":
        return "localhost"
    node: Any = {"metadata": metadata}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(metadata.get(match.group(1), {}).get(match.group(2), ""))
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise HarnessError(f"fieldRef {path!r} is not supported by the harness")
        node = node[part]
    return str(node)


def resolve_env(container: Container, secret_values: Secrets) -> dict[str, str]:
    """The env a kubelet would hand the container: values as written, `valueFrom` resolved.

    A secretKeyRef missing from `secret_values` is an error (a kubelet would not start the container),
    unless it is marked optional.
    """
    out: dict[str, str] = {}
    for item in container.env:
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            out[name] = _expand_k8s(str(item.get("value", "")), out)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            key = (ref["name"], ref["key"])
            if key in secret_values:
                out[name] = secret_values[key]
            elif not ref.get("optional", False):
                raise HarnessError(f"env {name}: secret {ref['name']!r} key {ref['key']!r} is not provided")
        elif "fieldRef" in source:
            out[name] = _field_ref(source["fieldRef"]["fieldPath"], container.pod_metadata)
        else:
            raise HarnessError(f"env {name}: valueFrom {sorted(source)} is not supported by the harness")
    return out


# Volume kinds whose files a test provides; the kubelet writes one file per key (or per `items` entry).
_PROJECTED_KINDS = {"secret": "secretName", "configMap": "name"}


def project_volumes(container: Container, secret_values: Secrets, config_maps: ConfigMaps,
                    root: Path) -> dict[str, Path]:
    """The files a kubelet would mount for the container's Secret and ConfigMap volumes, written under `root`:
    {mount path in the container: the local folder that stands in for it}.

    As the kubelet does: with `items`, one file per item at its `path` (a missing key is an error unless the
    volume is optional); without, one file per key the test knows of that Secret or ConfigMap. Other volume
    kinds (emptyDir for /dev/shm) are the node's business and skipped; `subPath` mounts are not supported.
    `root` is emptied first: a restarted container sees the volumes as they are now.
    """
    shutil.rmtree(root, ignore_errors=True)
    by_name = {v["name"]: v for v in container.volumes}
    mounts: dict[str, Path] = {}
    for mount in container.volume_mounts:
        volume = by_name.get(mount["name"])
        if volume is None:
            raise HarnessError(f"volumeMount {mount['name']!r} names no volume of the pod")
        kind = next((k for k in _PROJECTED_KINDS if k in volume), None)
        if kind is None:
            continue
        if mount.get("subPath"):
            raise HarnessError(f"volumeMount {mount['name']!r}: subPath is not supported by the harness")
        source = volume[kind]
        name = source[_PROJECTED_KINDS[kind]]
        values = secret_values if kind == "secret" else config_maps
        known = {key: value for (owner, key), value in values.items() if owner == name}
        items = source.get("items")
        if items is None and not known and not source.get("optional", False):
            raise HarnessError(f"volume {mount['name']!r}: {kind} {name!r} is not provided")
        files = {item["path"]: item["key"] for item in items} if items is not None else {k: k for k in known}
        folder = root / mount["name"]
        folder.mkdir(parents=True)
        for path, key in files.items():
            if key not in known:
                if source.get("optional", False):
                    continue
                raise HarnessError(f"volume {mount['name']!r}: {kind} {name!r} has no key {key!r}")
            rel = PurePosixPath(path)
            if rel.is_absolute() or ".." in rel.parts:
                raise HarnessError(f"volume {mount['name']!r}: item path {path!r} must be relative, without '..'")
            target = folder.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(known[key])
            target.chmod(int(source.get("defaultMode", 0o644)))
        mounts[mount["mountPath"].rstrip("/")] = folder
    return mounts


def _flag_pattern(flag: str) -> re.Pattern[str]:
    # ` --flag=value`, ` --flag value` (value not starting with '-') or a bare ` --flag`.
    return re.compile(rf"\s{re.escape(flag)}(?:=\S*|\s+(?!-)[^\s;&|]+)?(?=\s|;|&|\||$)")


def remove_flag(command: str, flag: str) -> str:
    return _flag_pattern(flag).sub("", command)

