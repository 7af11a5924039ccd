"""Where the Kubernetes API is and who to be there, as a `kubeapi.ClusterConfig`: from a kubeconfig's current
context (`from_kubeconfig`) or from the in-cluster service account (`in_cluster`).

A kubeconfig gives the cluster's `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify` and
`tls-server-name`, and the user's `token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`,
or `username`/`password`. Several files (a $KUBECONFIG list) are merged as kubectl merges them: the first file
that names an entry or the current context wins. A file path in a file is relative to that file's folder.
Users that run a program for their credentials (`exec`, `auth-provider`) and clusters behind a `proxy-url`
are refused, saying what to use instead. Everything unusable is an InputError naming the file and the problem,
never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook.common import manifests
from webhook.common.errors import InputError
from webhook.common.kubeapi import ClusterConfig

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The fields of each named list that hold a file path (made absolute against the file's folder when read).
_SECTIONS = {"clusters": ("cluster", ("certificate-authority",)),
             "users": ("user", ("client-certificate", "client-key", "tokenFile")),
             "contexts": ("context", ())}
_INSTEAD = ("use a kubeconfig with a token (e.g. from `kubectl create token SERVICE_ACCOUNT`) or a client "
            "certificate, or run in the cluster with the service account")


def _read(path: Path) -> dict[str, Any]:
    """One kubeconfig file, its relative paths made absolute."""
    documents = manifests.load_objects(path)  # InputError when unreadable, too big or not YAML
    if len(documents) > 1:
        raise InputError(f"{path}: a kubeconfig is one YAML document, found {len(documents)}")
    config = documents[0] if documents else {}
    for section, (inner, path_fields) in _SECTIONS.items():
        entries = config.get(section) or []
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get(inner) or {}, dict)
                for e in entries):
            raise InputError(f"{path}: `{section}` is not a list of entries with a name and a `{inner}` map")
        for entry in entries:
            body = dict(entry.get(inner) or {})
            for key in path_fields:
                if isinstance(body.get(key), str) and body[key]:
                    body[key] = str(path.parent / body[key])  # an absolute path stays as it is
            entry[inner] = body
    return config


def _merge(files: Sequence[Path]) -> dict[str, Any]:
    """kubectl's merge: the current context, and each named cluster, user and context, from the first file that
    has it."""
    merged: dict[str, Any] = {section: {} for section in _SECTIONS}
    merged["current-context"] = ""
    for path in files:
        config = _read(path)
        merged["current-context"] = merged["current-context"] or config.get("current-context") or ""
        for section, (inner, _) in _SECTIONS.items():
            for entry in config.get(section) or []:
                merged[section].setdefault(entry["name"], entry[inner])
    return merged


def _string(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: `{key}` is not a string")
    return value


def _pem(entry: Mapping[str, Any], key: str, where: str) -> bytes | None:
    """`KEY-data` (base64, wins as in client-go) or the file `KEY` names."""
    if (data := _string(entry, f"{key}-data", where)) is not None:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where}: `{key}-data` is not base64") from None
    if (file := _string(entry, key, where)) is not None:
        try:
            return Path(file).read_bytes()
        except OSError as exc:
            raise InputError(f"{where}: `{key}` {file}: cannot read: {exc.strerror}") from None
    return None


def from_kubeconfig(files: Sequence[Path], context: str | None = None) -> ClusterConfig:
    """The ClusterConfig of `context` (default: the current context) in the merged `files`."""
    shown = os.pathsep.join(map(str, files))
    merged = _merge(files)
    name = context or merged["current-context"]
    if not name:
        raise InputError(f"kubeconfig {shown}: no current-context; choose one with `kubectl config use-context`")
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise InputError(f"kubeconfig {shown}: context {name!r} not found")
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    cluster = merged["clusters"].get(cluster_name) if isinstance(cluster_name, str) else None
    if cluster is None:
        raise InputError(f"kubeconfig {shown}: context {name!r} names cluster {cluster_name!r}, which is not there")
    user: Mapping[str, Any] = {}
    if isinstance(user_name, str) and user_name:
        user = merged["users"].get(user_name)
        if user is None:
            raise InputError(f"kubeconfig {shown}: context {name!r} names user {user_name!r}, which is not there")
    where = f"kubeconfig {shown}, user {user_name!r}"
    for plugin, what, field in (("exec", "an exec plugin", "command"), ("auth-provider", "an auth-provider", "name")):
        if plugin in user:
            named = user[plugin].get(field) if isinstance(user[plugin], dict) else None
            raise InputError(f"{where}: credentials from {what} ({named or '?'}) are not supported; {_INSTEAD}")
    cluster_where = f"kubeconfig {shown}, cluster {cluster_name!r}"
    server = _string(cluster, "server", cluster_where)
    if server is None or not server.startswith(("https://", "http://")):
        raise InputError(f"{cluster_where}: `server` is not an https:// (or http://) URL")
    if _string(cluster, "proxy-url", cluster_where) is not None:  # refused rather than silently bypassed
        raise InputError(f"{cluster_where}: `proxy-url` is not supported; the webhook connects to `server` directly")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise InputError(f"{cluster_where}: `insecure-skip-tls-verify` is not true or false")
    cert, key = _pem(user, "client-certificate", where), _pem(user, "client-key", where)
    if (cert is None) != (key is None):
        raise InputError(f"{where}: a client certificate needs both `client-certificate` and `client-key`")
    token, token_file = _string(user, "token", where), _string(user, "tokenFile", where)
    username, password = _string(user, "username", where), _string(user, "password", where)
    if username is not None and (token or token_file):
        raise InputError(f"{where}: give a token or a username and password, not both")
    if token_file is not None and not os.access(token_file, os.R_OK):
        raise InputError(f"{where}: `tokenFile` {token_file}: cannot read")
    namespace = ctx.get("namespace")
    return ClusterConfig(
        server=server, ca_pem=_pem(cluster, "certificate-authority", cluster_where), insecure=insecure,
        tls_server_name=_string(cluster, "tls-server-name", cluster_where), client_cert_pem=cert,
        client_key_pem=key, token=token, token_file=Path(token_file) if token_file else None, username=username,
        password=password, namespace=namespace if isinstance(namespace, str) and namespace else None)


def default_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """$KUBECONFIG's files that exist (kubectl skips the others), else ~/.kube/config; InputError when none."""
    env = os.environ if env is None else env
    if listed := [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]:
        files = [p for p in listed if p.exists()]
        where = f"$KUBECONFIG ({env['KUBECONFIG']})"
    else:
        home = env.get("HOME")
        files = [p for p in [Path(home or "~").expanduser() / ".kube" / "config"] if p.exists()]
        where = "~/.kube/config"
    if not files:
        raise InputError(f"no kubeconfig: {where} does not exist; give --kubeconfig FILE or run in a cluster")
    return files


def in_cluster(env: Mapping[str, str] | None = None, folder: Path = SERVICE_ACCOUNT) -> ClusterConfig:
    """The pod's service account: the apiserver at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, its CA and
    its token file (re-read by the client, since bound tokens rotate) from `folder`."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise InputError("in a cluster, but KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is not set")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    token = folder / "token"
    try:
        ca = (folder / "ca.crt").read_bytes()
        token.read_bytes()
    except OSError as exc:
        raise InputError(f"in a cluster, but the service account's {exc.filename} cannot be read: "
                         f"{exc.strerror}") from None
    try:
        namespace = (folder / "namespace").read_text().strip() or None
    except OSError:
        namespace = None
    return ClusterConfig(server=f"https://{host}:{port}", ca_pem=ca, token_file=token, namespace=namespace)
