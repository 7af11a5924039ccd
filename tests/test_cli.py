"""The CLI end to end, as a user runs it: `render` (exit codes 0/1/2, YAML and JSON), `certs generate`, env vars."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from testkit.kuberay_pods import QUICKSTART_UID, pod, quickstart_raycluster, raycluster
from testkit.webhook import free_port, make_certs
from webhook.cli.render import render
from webhook.core.settings import SecretRef, Settings


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_FT_WEBHOOK_")}
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    cluster = quickstart_raycluster()
    rc, head, worker = tmp_path / "rc.yaml", tmp_path / "head.json", tmp_path / "worker.yaml"
    rc.write_text(yaml.safe_dump(cluster))
    head.write_text(json.dumps(pod(cluster, "head")))
    worker.write_text(yaml.safe_dump(pod(cluster, "worker")))
    return rc, head, worker


def test_render_patch_is_the_same_as_the_library(files: tuple[Path, Path, Path]) -> None:
    rc, head, _ = files
    out = cli("render", "--raycluster", str(rc), "--pod", str(head))
    assert out.returncode == 0, out.stderr
    expected = render(quickstart_raycluster(), json.loads(head.read_text()), Settings()).patch
    assert json.loads(out.stdout) == expected
    # No warning; the one line is the Event the server would record on the RayCluster for this head pod.
    assert out.stderr.startswith("event on the RayCluster: Normal GCSFaultToleranceConfigured: injected ")
    assert out.stderr.count("\n") == 1


def test_render_pod_output_with_defaults_from_flags_and_env(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    cluster = raycluster(annotations={"ray.io/ft-enabled": "true"})
    rc = tmp_path / "plain.yaml"
    rc.write_text(yaml.safe_dump(cluster))
    head = tmp_path / "h.yaml"
    head.write_text(yaml.safe_dump(pod(cluster, "head")))
    out = cli("render", "--raycluster", str(rc), "--pod", str(head), "--output", "pod",
              "--default-redis-password-secret", "admin-pw/pass",
              env={"RAY_FT_WEBHOOK_DEFAULT_REDIS_ADDRESS": "redis.ray:6379"})
    assert out.returncode == 0, out.stderr
    container = json.loads(out.stdout)["spec"]["containers"][0]
    env = {e["name"]: e.get("valueFrom", e.get("value")) for e in container["env"]}
    assert env["RAY_REDIS_ADDRESS"] == "redis.ray:6379"
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "admin-pw", "key": "pass"}}
    assert env["RAY_external_storage_namespace"] == QUICKSTART_UID
    expected = render(cluster, pod(cluster, "head"), Settings(
        default_redis_address="redis.ray:6379", default_redis_password_secret=SecretRef("admin-pw", "pass"))).pod
    assert json.loads(out.stdout) == expected


def test_render_warnings_go_to_stderr(tmp_path: Path) -> None:
    cluster = raycluster(annotations={"ray.io/ft-enabled": "true"})
    rc, p = tmp_path / "rc.yaml", tmp_path / "p.yaml"
    rc.write_text(yaml.safe_dump(cluster))
    p.write_text(yaml.safe_dump(pod(cluster, "head")))
    out = cli("render", "--raycluster", str(rc), "--pod", str(p))
    assert out.returncode == 0
    assert "warning: GCS fault tolerance is on but no Redis address is set" in out.stderr
    json.loads(out.stdout)


def test_render_denial_exits_1(tmp_path: Path) -> None:
    cluster = raycluster(annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/head-reconnect-timeout-s": "-1"})
    rc, p = tmp_path / "rc.yaml", tmp_path / "p.yaml"
    rc.write_text(yaml.safe_dump(cluster))
    p.write_text(yaml.safe_dump(pod(cluster, "head")))
    out = cli("render", "--raycluster", str(rc), "--pod", str(p))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip() == (
        "denied: RayCluster default/raycluster-external-redis: annotation "
        "ray-ft-webhook.io/head-reconnect-timeout-s: '-1' is not a positive integer (seconds)"
    )


@pytest.mark.parametrize("setup, message", [
    (lambda d: (d / "rc.yaml").write_text("a: [unclosed"), "not valid YAML or JSON (line 2)"),
    (lambda d: (d / "rc.yaml").write_text("- 1\n- 2\n"), "expected Kubernetes objects, found a list"),
    (lambda d: (d / "rc.yaml").write_text("kind: Pod\n"), "expected exactly one RayCluster, found 0"),
    (lambda d: (d / "rc.yaml").unlink(), "cannot read: No such file or directory"),
], ids=["bad-yaml", "not-objects", "wrong-kind", "missing-file"])
def test_render_bad_input_exits_2_with_one_line(tmp_path: Path, files: tuple[Path, Path, Path],
                                                setup: object, message: str) -> None:
    _, head, _ = files
    setup(tmp_path)  # type: ignore[operator]
    out = cli("render", "--raycluster", str(tmp_path / "rc.yaml"), "--pod", str(head))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_render_pod_of_another_cluster_exits_2(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    rc, _, _ = files
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(pod(raycluster(name="other", uid="u-2"), "head")))
    out = cli("render", "--raycluster", str(rc), "--pod", str(other))
    assert out.returncode == 2 and "the pod belongs to RayCluster 'other'" in out.stderr


@pytest.mark.parametrize("args, env, message", [
    (["--worker-reconnect-timeout-s", "0"], {}, "'0' is not a positive integer"),
    (["--default-redis-password-secret", "a/b/c"], {}, "is not NAME or NAME/KEY"),
    (["--output", "yaml"], {}, "argument --output: invalid choice: 'yaml'"),
    ([], {"RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S": "abc"}, "RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S: 'abc'"),
])
def test_bad_flags_exit_2(files: tuple[Path, Path, Path], args: list[str], env: dict[str, str], message: str) -> None:
    rc, head, _ = files
    out = cli("render", "--raycluster", str(rc), "--pod", str(head), *args, env=env)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["certs", "install", "--namespace", "n", "--ip", "bogus"], "argument --ip: 'bogus' is not an IP address"),
    (["certs", "generate", "--out", "x", "--service", "s", "--namespace", "n", "--ip", "300.1.1.1"], "'300.1.1.1'"),
    (["serve", "--port", "99999"], "argument --port: '99999' is not a TCP port"),
    (["render", "--raycluster", "x", "--pod", "y", "--default-redis-address", "redis://u:pw@r:6379"],
     "argument --default-redis-address: '***@r:6379': has credentials"),
    (["serve", "--cert-ips", "10.0.0.1,nope"], "argument --cert-ips: 'nope' is not an IP address"),
    (["serve", "--decision-memo-kib", "-1"], "argument --decision-memo-kib: '-1' is not a positive integer"),
    (["serve", "--decision-memo-kib", "2000000"], "argument --decision-memo-kib: '2000000' is over 1048576 KiB"),
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_serve_without_certificate_exits_2(tmp_path: Path) -> None:
    out = cli("serve", "--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(tmp_path / "nope.key"),
              "--rayclusters-from", str(tmp_path))
    assert out.returncode == 2
    assert "ray-ft-webhook serve: error: cannot read TLS certificate" in out.stderr and "Traceback" not in out.stderr


def test_help_documents_every_flag_and_its_env_var() -> None:
    out = cli("serve", "--help")
    for flag in ("--host", "--port", "--tls-cert", "--tls-key", "--kubeconfig", "--rayclusters-from",
                 "--default-redis-address", "--default-redis-password-secret", "--worker-reconnect-timeout-s",
                 "--head-reconnect-timeout-s", "--on-lookup-failure"):
        assert flag in out.stdout
        assert "RAY_FT_WEBHOOK_" + flag[2:].upper().replace("-", "_") in out.stdout.replace("\n", "").replace(" ", "")


def test_certs_generate(tmp_path: Path) -> None:
    out = cli("certs", "generate", "--out", str(tmp_path / "c"), "--service", "ray-ft-webhook",
              "--namespace", "ray-system", "--ip", "127.0.0.1", "--days", "30")
    assert out.returncode == 0, out.stderr
    ca_pem = (tmp_path / "c" / "ca.crt").read_bytes()
    assert base64.b64decode(out.stdout.strip()) == ca_pem
    leaf = x509.load_pem_x509_certificate((tmp_path / "c" / "tls.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "ray-ft-webhook", "ray-ft-webhook.ray-system", "ray-ft-webhook.ray-system.svc",
        "ray-ft-webhook.ray-system.svc.cluster.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf.verify_directly_issued_by(ca)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30
    assert oct((tmp_path / "c" / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_certs_generate_bad_ip_exits_2(tmp_path: Path) -> None:
    out = cli("certs", "generate", "--out", str(tmp_path), "--service", "s", "--namespace", "n", "--ip", "300.1.1.1")
    assert out.returncode == 2 and "300.1.1.1" in out.stderr and "Traceback" not in out.stderr


LAUGHS = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


def _ray_pod_yaml(extra: str) -> str:
    """The quick start's head pod as YAML, with `extra` lines appended at the top level."""
    return yaml.safe_dump(pod(quickstart_raycluster(), "head")) + extra


@pytest.mark.parametrize("which, content, message", [
    ("pod", _ray_pod_yaml(LAUGHS), "YAML aliases (*l0) are not accepted in manifests (line "),
    ("raycluster", yaml.safe_dump(quickstart_raycluster()) + LAUGHS, "YAML aliases (*l0) are not accepted"),
    ("pod", "kind: Pod\nmetadata: &m {name: p, loop: *m}\n", "YAML aliases (*m) are not accepted"),
    ("pod", _ray_pod_yaml("#" + "x" * (3 * 1024 * 1024) + "\n"), "larger than 3 MiB"),
    ("pod", "kind: Pod\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
     "nested deeper than 100 levels"),
    ("raycluster", "kind: RayCluster\nmetadata:\n  name: rc\n  annotations: {1: x}\n",
     "key '1' at 'metadata.annotations' is not a string; quote it"),
    ("raycluster", "kind: RayCluster\nmetadata: {name: rc}\n? [a]\n: b\n", "not valid YAML or JSON (line 3)"),
    ("pod", "kind: Pod\nmetadata: {name: !!binary aGVsbG8=}\n", "the value at 'metadata.name' is a bytes, not JSON"),
    ("pod", "kind: Pod\nmetadata: {name: " + "1" * 5000 + "}\n", "Exceeds the limit (4300 digits)"),
    ("pod", "kind: Pod\nspec: {priority: " + "9" * 30 + "}\n", "the number at 'spec.priority' is out of the 64-bit"),
    ("raycluster", "just a string\n", "expected Kubernetes objects, found a str"),
    ("raycluster", "[1, 2]", "expected Kubernetes objects, found a list"),
    ("pod", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text (byte 0)"),
    ("pod", "kind: Pod\x00\x07\n", "not valid YAML or JSON"),
], ids=["billion-laughs-pod", "billion-laughs-raycluster", "recursive-alias", "huge-file", "too-deep",
        "non-string-key", "sequence-key", "binary-tag", "int-too-long", "int-over-64-bit", "scalar-document",
        "list-document", "binary-junk", "control-characters"])
def test_bad_manifest_exits_2_with_one_line(tmp_path: Path, files: tuple[Path, Path, Path], which: str,
                                            content: str | bytes, message: str) -> None:
    rc, head, _ = files
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = ("--raycluster", str(bad), "--pod", str(head)) if which == "raycluster" else \
        ("--raycluster", str(rc), "--pod", str(bad))
    out = cli("render", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr[-2000:]
    assert out.stderr.startswith(f"ray-ft-webhook render: error: {bad}: ")


def test_json_with_escaped_emoji_is_read(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    """json.dumps writes non-ASCII as surrogate-pair escapes, which YAML refuses: JSON files are read as JSON."""
    rc, _, _ = files
    p = pod(quickstart_raycluster(), "head")
    p["metadata"]["annotations"] = {"team": "\U0001f600"}
    head = tmp_path / "head.json"
    head.write_text(json.dumps(p))
    out = cli("render", "--raycluster", str(rc), "--pod", str(head), "--output", "pod")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["metadata"]["annotations"]["team"] == "\U0001f600"


def test_yaml_timestamps_stay_strings(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    rc, _, _ = files
    head = tmp_path / "head.yaml"
    head.write_text(_ray_pod_yaml("").replace("metadata:\n", "metadata:\n  creationTimestamp: 2026-01-01T00:00:00Z\n"))
    out = cli("render", "--raycluster", str(rc), "--pod", str(head), "--output", "pod")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"


def test_serve_refuses_a_bad_manifest_folder(tmp_path: Path) -> None:
    folder, tls = tmp_path / "rayclusters", tmp_path / "tls"
    folder.mkdir()
    tls.mkdir()
    (folder / "rc.yaml").write_text(yaml.safe_dump(quickstart_raycluster()) + LAUGHS)
    make_certs(tls)
    out = cli("serve", "--rayclusters-from", str(folder), "--tls-cert", str(tls / "tls.crt"),
              "--tls-key", str(tls / "tls.key"), "--port", str(free_port()))
    assert out.returncode == 2 and "YAML aliases (*l0) are not accepted" in out.stderr and "Traceback" not in out.stderr


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
    }))
    return path


@pytest.mark.parametrize("args, env, message", [
    (["-n", "a", "-A"], {}, "argument -A/--all-namespaces: not allowed with argument -n/--namespace"),
    (["-o", "yaml"], {}, "argument -o/--output: invalid choice: 'yaml'"),
    (["--config-from", "just-a-name"], {}, "argument --config-from: 'just-a-name' is not NAMESPACE/NAME"),
    (["--chunk-size", "0"], {}, "argument --chunk-size: '0' is not a positive integer"),
    (["--default-redis-address", "http://r:1"], {}, "argument --default-redis-address: 'http://r:1'"),
    ([], {"RAY_FT_WEBHOOK_DEFAULT_REDIS_PASSWORD_SECRET": "a/b/c"}, "RAY_FT_WEBHOOK_DEFAULT_REDIS_PASSWORD_SECRET:"),
], ids=["namespace-and-all", "output", "config-from", "chunk-size", "address-flag", "secret-env"])
def test_check_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                              message: str) -> None:
    # A kubeconfig nobody listens at: usage errors must come first, before any connection.
    config = _kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{free_port()}")
    out = cli("check", "--kubeconfig", str(config), *args, env=env)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""


def test_check_without_a_usable_kubeconfig_exits_2(tmp_path: Path) -> None:
    missing = cli("check", "--kubeconfig", str(tmp_path / "nope"))
    garbage = tmp_path / "garbage"
    garbage.write_text("{not: [yaml")
    for out in (missing, cli("check", "--kubeconfig", str(garbage)),
                cli("check", env={"KUBECONFIG": str(tmp_path / "nope"), "HOME": str(tmp_path)})):
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("ray-ft-webhook check: error: ") and out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""


def test_check_against_an_unreachable_apiserver_exits_2(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{free_port()}")
    for extra in ([], ["--config-from", "ray-ft-webhook/ray-ft-webhook-config"], ["-A"]):
        out = cli("check", "--kubeconfig", str(config), *extra)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("ray-ft-webhook check: error: cannot reach the Kubernetes API: ")
        assert out.stderr.count("\n") == 1 and out.stdout == ""


def test_check_help_documents_its_flags() -> None:
    out = cli("check", "--help")
    text = out.stdout.replace("\n", "").replace(" ", "")
    for flag in ("--namespace", "--all-namespaces", "--output", "--kubeconfig", "--config-from", "--chunk-size",
                 "--default-redis-address", "--default-redis-password-secret", "--worker-reconnect-timeout-s",
                 "--head-reconnect-timeout-s"):
        assert flag in out.stdout
    for flag in ("--default-redis-address", "--default-redis-password-secret", "--worker-reconnect-timeout-s",
                 "--head-reconnect-timeout-s"):
        assert "RAY_FT_WEBHOOK_" + flag[2:].upper().replace("-", "_") in text
    assert "Exit0wheneveryFTclusteriscomplete,1otherwise,2onunusableinput" in text


def test_check_progress_goes_to_stderr_only_after_a_moment(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from webhook.cli import check

    monkeypatch.setattr(check, "QUIET_FOR_S", 1e9)
    check._Progress().note("listed 500 RayClusters")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(check, "QUIET_FOR_S", -1.0)  # as if the run had taken longer than the quiet time
    check._Progress().note("listed 500 RayClusters")
    assert capsys.readouterr() == ("", "ray-ft-webhook check: listed 500 RayClusters\n")


def test_check_defaults_flag_over_configmap_over_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check --config-from`: a flag given wins over the ConfigMap (whose bad value is then never read); the
    ConfigMap's empty value means unset; the process environment is not read."""
    from webhook.cli.options import build_parser, resolve_env, settings_from

    parser = build_parser()
    args = parser.parse_args(["check", "--worker-reconnect-timeout-s", "900"])
    monkeypatch.setenv("RAY_FT_WEBHOOK_HEAD_RECONNECT_TIMEOUT_S", "45")
    resolve_env(parser, args, {"RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S": "soon",
                               "RAY_FT_WEBHOOK_DEFAULT_REDIS_ADDRESS": "redis.cm:6379",
                               "RAY_FT_WEBHOOK_DEFAULT_REDIS_PASSWORD_SECRET": ""}, where="ConfigMap a/b: ")
    assert settings_from(args) == Settings(default_redis_address="redis.cm:6379", worker_reconnect_timeout_s=900)
