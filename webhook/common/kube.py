"""The Kubernetes API client of the commands: from `--kubeconfig FILE`, else the in-cluster service account (when
KUBERNETES_SERVICE_HOST is set), else $KUBECONFIG or ~/.kube/config; and the namespace kubectl would use."""

from __future__ import annotations

import os
from pathlib import Path

from webhook.common import kubeconfig
from webhook.common.errors import InputError
from webhook.common.kubeapi import Client, ClusterConfig

IN_CLUSTER_NAMESPACE = kubeconfig.SERVICE_ACCOUNT / "namespace"


def cluster_config(path: Path | None) -> ClusterConfig:
    """Where the API is and who to be there; InputError saying what is missing or unusable."""
    if path is not None:
        return kubeconfig.from_kubeconfig([path])
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kubeconfig.in_cluster()
    return kubeconfig.from_kubeconfig(kubeconfig.default_files())


def api_client(path: Path | None) -> Client:
    """A client of the API (`cluster_config`'s); raises InputError when none can be configured."""
    config = cluster_config(path)
    try:
        return Client(config)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a CA or key that is not PEM, a key mismatch
        raise InputError(f"cannot use the credentials for {config.server}: {' '.join(str(exc).split())[:200]}"
                         ) from None


def own_namespace() -> str | None:
    """The namespace this process runs in: $POD_NAMESPACE, else the service account's, else None."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def current_namespace(path: Path | None) -> str | None:
    """The namespace kubectl would use, following `api_client`'s order: the current context's of `path`, else (in
    a cluster) this pod's, else the current context's of $KUBECONFIG or ~/.kube/config; None when none names one."""
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return own_namespace()
    try:
        return cluster_config(path).namespace
    except InputError:
        return None
