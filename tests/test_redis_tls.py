"""Redis over TLS (issue 14, section 1): the CA, client certificate and server name from each level, mounted
read-only on the head and the cleanup pod only, only for rediss://, present wins, and the flags that set them."""

from __future__ import annotations

from typing import Any

import pytest

from testkit.kuberay_pods import cleanup_pod, pod, raycluster
from webhook.cli.render import Rendered, render
from webhook.core.settings import CARef, Settings

FT = {"ray.io/ft-enabled": "true"}
TLS_ADDRESS = {"ray-ft-webhook.io/redis-address": "rediss://redis.example:6380"}
CA = "/etc/ray-ft-webhook/redis-ca/ca.crt"


def run(annotations: dict[str, str], role: str = "head", settings: Settings | None = None,
        namespace: dict[str, str] | None = None, **cluster_args: Any) -> Rendered:
    cluster = raycluster(annotations={**FT, **annotations}, **cluster_args)
    p = cleanup_pod(cluster) if role == "redis-cleanup" else pod(cluster, role)
    ns = None if namespace is None else {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": "default", "annotations": namespace}}
    return render(cluster, p, settings or Settings(), ns)


def env(result: Rendered) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in result.pod["spec"]["containers"][0].get("env", [])}


def volumes(result: Rendered) -> dict[str, Any]:
    """The pod's volumes of ours (KubeRay's pods have their own, e.g. shared-mem)."""
    return {v["name"]: v for v in result.pod["spec"].get("volumes", []) if v["name"].startswith("ray-ft-webhook")}


def mounts(result: Rendered) -> dict[str, Any]:
    return {m["name"]: m for m in result.pod["spec"]["containers"][0].get("volumeMounts", [])
            if m["name"].startswith("ray-ft-webhook")}


def test_ca_from_a_secret_is_mounted_and_named() -> None:
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls/root.pem"})
    assert env(result)["RAY_REDIS_CA_CERT"] == CA
    assert volumes(result)["ray-ft-webhook-redis-ca"] == {
        "name": "ray-ft-webhook-redis-ca",
        "secret": {"secretName": "redis-tls", "items": [{"key": "root.pem", "path": "ca.crt"}]}}
    assert mounts(result)["ray-ft-webhook-redis-ca"] == {
        "name": "ray-ft-webhook-redis-ca", "mountPath": "/etc/ray-ft-webhook/redis-ca", "readOnly": True}
    assert result.warnings == ()


def test_ca_from_a_configmap_with_the_default_key() -> None:
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-configmap": "redis-ca"})
    assert volumes(result)["ray-ft-webhook-redis-ca"]["configMap"] == {
        "name": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_mutual_tls_and_server_name() -> None:
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-client-cert-secret": "ray-client",
                  "ray-ft-webhook.io/redis-server-name": "redis.internal"})
    assert env(result)["RAY_REDIS_CLIENT_CERT"] == "/etc/ray-ft-webhook/redis-client/tls.crt"
    assert env(result)["RAY_REDIS_CLIENT_KEY"] == "/etc/ray-ft-webhook/redis-client/tls.key"
    assert env(result)["RAY_REDIS_SERVER_NAME"] == "redis.internal"
    assert volumes(result)["ray-ft-webhook-redis-client"]["secret"] == {
        "secretName": "ray-client",
        "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}
    assert mounts(result)["ray-ft-webhook-redis-client"]["readOnly"] is True


def test_the_cleanup_pod_gets_the_same_files() -> None:
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls",
                  "ray-ft-webhook.io/redis-client-cert-secret": "ray-client"}, role="redis-cleanup")
    assert env(result)["RAY_REDIS_CA_CERT"] == CA and "RAY_REDIS_CLIENT_KEY" in env(result)
    assert set(volumes(result)) >= {"ray-ft-webhook-redis-ca", "ray-ft-webhook-redis-client"}
    assert set(mounts(result)) == {"ray-ft-webhook-redis-ca", "ray-ft-webhook-redis-client"}


def test_workers_get_nothing_of_it() -> None:
    """Workers reach GCS over gRPC, never Redis."""
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls"}, role="worker")
    assert "RAY_REDIS_CA_CERT" not in env(result) and volumes(result) == {}


@pytest.mark.parametrize("address", ["redis:6379", "redis://redis:6379", "rediss://a:6380,redis://b:6379"])
def test_nothing_without_rediss_and_a_warning(address: str) -> None:
    result = run({"ray-ft-webhook.io/redis-address": address, "ray-ft-webhook.io/redis-ca-secret": "redis-tls",
                  "ray-ft-webhook.io/redis-client-cert-secret": "c"})
    assert "RAY_REDIS_CA_CERT" not in env(result) and volumes(result) == {} and mounts(result) == {}
    assert "Redis TLS CA, client certificate not injected: the address is not rediss://, Ray ignores it" \
        in result.warnings


def test_the_head_templates_own_rediss_address_counts() -> None:
    result = run({"ray-ft-webhook.io/redis-ca-secret": "redis-tls"},
                 head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "rediss://r:6380"}])
    assert env(result)["RAY_REDIS_CA_CERT"] == CA


def test_the_containers_own_value_wins_and_no_volume_is_added() -> None:
    result = run({**TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls"},
                 head_env=[{"name": "RAY_REDIS_CA_CERT", "value": "/mine/ca.pem"}])
    assert env(result)["RAY_REDIS_CA_CERT"] == "/mine/ca.pem" and volumes(result) == {}


def test_a_volume_of_that_name_already_there_is_not_touched() -> None:
    cluster = raycluster(annotations={**FT, **TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls"})
    p = pod(cluster, "head")
    p["spec"]["volumes"] = [{"name": "ray-ft-webhook-redis-ca", "emptyDir": {}}]
    result = render(cluster, p, Settings())
    assert result.pod["spec"]["volumes"] == [{"name": "ray-ft-webhook-redis-ca", "emptyDir": {}}]
    assert mounts(result) == {}
    assert "RAY_REDIS_CA_CERT" not in env(result)
    assert any("already has volume ray-ft-webhook-redis-ca" in w for w in result.warnings)


def test_existing_volumes_and_mounts_are_appended_to() -> None:
    cluster = raycluster(annotations={**FT, **TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls"})
    p = pod(cluster, "head")
    p["spec"]["volumes"] = [{"name": "logs", "emptyDir": {}}]
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "logs", "mountPath": "/tmp/ray"}]
    del p["spec"]["containers"][0]["env"]  # and a list created whole
    result = render(cluster, p, Settings())
    assert [v["name"] for v in result.pod["spec"]["volumes"]] == ["logs", "ray-ft-webhook-redis-ca"]
    assert [m["name"] for m in result.pod["spec"]["containers"][0]["volumeMounts"]] == ["logs",
                                                                                       "ray-ft-webhook-redis-ca"]
    assert {"op": "add", "path": "/spec/volumes/-", "value": volumes(result)["ray-ft-webhook-redis-ca"]} \
        in result.patch
    assert any(op["path"] == "/spec/containers/0/env" and op["op"] == "add" for op in result.patch)


def test_a_pod_without_volumes_gets_the_lists_created_whole() -> None:
    cluster = raycluster(annotations={**FT, **TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls"})
    p = pod(cluster, "head")
    del p["spec"]["volumes"]
    p["spec"]["containers"][0].pop("volumeMounts", None)
    result = render(cluster, p, Settings())
    assert {"op": "add", "path": "/spec/volumes", "value": [volumes(result)["ray-ft-webhook-redis-ca"]]} \
        in result.patch
    assert {"op": "add", "path": "/spec/containers/0/volumeMounts",
            "value": [mounts(result)["ray-ft-webhook-redis-ca"]]} in result.patch


def test_reinvocation_adds_nothing() -> None:
    cluster = raycluster(annotations={**FT, **TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "redis-tls",
                                      "ray-ft-webhook.io/redis-client-cert-secret": "c"})
    once = render(cluster, pod(cluster, "head"), Settings()).pod
    again = render(cluster, once, Settings())
    assert again.patch == []


def test_the_admins_defaults_and_their_source() -> None:
    settings = Settings(default_redis_address="rediss://shared:6380", default_redis_ca=CARef("ConfigMap", "ca"),
                        default_redis_server_name="shared.redis")
    result = run({}, settings=settings)
    assert env(result)["RAY_REDIS_CA_CERT"] == CA and env(result)["RAY_REDIS_SERVER_NAME"] == "shared.redis"
    assert result.event is not None
    assert "RAY_REDIS_CA_CERT=ConfigMap ca/ca.crt (the admin's default --default-redis-ca-configmap)" \
        in result.event.note


@pytest.mark.parametrize(("annotations", "message"), [
    ({"ray-ft-webhook.io/redis-ca-secret": "Bad_Name"}, "is not NAME or NAME/KEY of a Secret"),
    ({"ray-ft-webhook.io/redis-ca-configmap": "a/b/c"}, "is not NAME or NAME/KEY of a ConfigMap"),
    ({"ray-ft-webhook.io/redis-client-cert-secret": "a/b"}, "is not the NAME of a Secret"),
    ({"ray-ft-webhook.io/redis-server-name": "has space"}, "is not a host name"),
    ({"ray-ft-webhook.io/redis-ca-secret": "a", "ray-ft-webhook.io/redis-ca-configmap": "b"}, "give one, not both"),
])
def test_bad_tls_annotations_are_denied_naming_them(annotations: dict[str, str], message: str) -> None:
    result = run({**TLS_ADDRESS, **annotations})
    assert result.denied is not None and message in result.denied


def test_each_tls_value_names_its_source() -> None:
    from webhook.core.namespace import parse_namespace
    from webhook.core.plan import plan_cluster
    from webhook.core.raycluster import parse_raycluster
    from webhook.core.validation import describe

    def rows(annotations: dict[str, str], settings: Settings | None = None,
             namespace: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
        c = parse_raycluster(raycluster(annotations={**FT, **TLS_ADDRESS, **annotations}))
        ns = parse_namespace({"metadata": {"name": "team", "annotations": namespace}}) if namespace else None
        v = plan_cluster(c, settings or Settings(), ns=ns).values
        assert v is not None
        return {name: (shown, source) for name, shown, source in describe(v)}

    own = rows({"ray-ft-webhook.io/redis-ca-secret": "tls/root.pem",
                "ray-ft-webhook.io/redis-client-cert-secret": "client",
                "ray-ft-webhook.io/redis-server-name": "redis.example"})
    assert own["RAY_REDIS_CA_CERT"] == ("Secret tls/root.pem", "annotation ray-ft-webhook.io/redis-ca-secret")
    assert own["RAY_REDIS_CLIENT_CERT"] == ("Secret client", "annotation ray-ft-webhook.io/redis-client-cert-secret")
    assert own["RAY_REDIS_SERVER_NAME"] == ("redis.example", "annotation ray-ft-webhook.io/redis-server-name")
    tenant = rows({}, namespace={"ray-ft-webhook.io/redis-ca-configmap": "ca/ca.crt"})
    assert tenant["RAY_REDIS_CA_CERT"][1] == "annotation ray-ft-webhook.io/redis-ca-configmap on Namespace team"
    admin = rows({}, Settings(default_redis_client_cert_secret="c", default_redis_server_name="s.example"))
    assert admin["RAY_REDIS_CLIENT_CERT"] == ("Secret c", "the admin's default --default-redis-client-cert-secret")
    assert admin["RAY_REDIS_SERVER_NAME"] == ("s.example", "the admin's default --default-redis-server-name")


def test_tls_without_any_address_is_not_warned_about() -> None:
    result = run({"ray-ft-webhook.io/redis-server-name": "redis.example"})
    assert not any("TLS" in w for w in result.warnings)
    plain = run({"ray-ft-webhook.io/redis-address": "redis:6379", "ray-ft-webhook.io/redis-server-name": "r.example"})
    assert "Redis TLS server name not injected: the address is not rediss://, Ray ignores it" in plain.warnings


@pytest.mark.parametrize("role", ["head", "redis-cleanup"])
def test_a_volume_of_ours_already_in_the_pod_is_left_alone_with_a_warning(role: str) -> None:
    cluster = raycluster(annotations={**FT, **TLS_ADDRESS, "ray-ft-webhook.io/redis-ca-secret": "tls",
                                      "ray-ft-webhook.io/redis-client-cert-secret": "client"})
    p = cleanup_pod(cluster) if role == "redis-cleanup" else pod(cluster, role)
    p["spec"]["volumes"] = [*p["spec"].get("volumes", []), {"name": "ray-ft-webhook-redis-ca", "emptyDir": {}},
                            {"name": "ray-ft-webhook-redis-client", "emptyDir": {}}]
    result = render(cluster, p, Settings())
    assert ("the pod already has volume ray-ft-webhook-redis-ca or path /etc/ray-ft-webhook/redis-ca: Redis CA not "
            "injected") in result.warnings
    assert ("the pod already has volume ray-ft-webhook-redis-client or path /etc/ray-ft-webhook/redis-client: Redis "
            "client certificate not injected") in result.warnings
