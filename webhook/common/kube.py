"""A Kubernetes API client from a kubeconfig, the in-cluster service account, or $KUBECONFIG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from webhook.common.errors import InputError

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _config_errors() -> tuple[type[Exception], ...]:
    """What the kubernetes client's loader raises on an unusable kubeconfig: missing or unreadable (OSError),
    not YAML, or YAML of the wrong shape (its code indexes and calls into whatever it finds). Imported when
    needed: the client takes a while to import, and `render` never needs it."""
    import yaml
    from kubernetes.config import ConfigException

    return (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError)


def api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient; raises InputError naming what was tried when none can be configured."""
    from kubernetes import client, config

    try:
        if kubeconfig is not None:
            return config.new_client_from_config(config_file=str(kubeconfig))
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config()
    except _config_errors() as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"cannot reach Kubernetes: give --kubeconfig FILE or run in a cluster ({detail})") from None


def own_namespace() -> str | None:
    """The namespace this process runs in: $POD_NAMESPACE, else the service account's, else None."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def current_namespace(kubeconfig: Path | None) -> str | None:
    """The namespace kubectl would use, following `api_client`'s order: the current context's of `kubeconfig`,
    else (in a cluster) this pod's, else the current context's of $KUBECONFIG or ~/.kube/config; None when
    none names one."""
    from kubernetes import config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return own_namespace()
    try:
        _, active = config.list_kube_config_contexts(config_file=str(kubeconfig) if kubeconfig else None)
    except _config_errors():
        return None
    context = (active or {}).get("context") or {}
    namespace = context.get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None
