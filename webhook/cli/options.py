"""The command line's options: one spec for every flag and its RAY_FT_WEBHOOK_<FLAG> variable, the parser, and
the typed objects built from them (`Settings` for the plan, `ServeOptions` for `serve`).

It lives below `main` and `serve` so both can read it: `serve`'s `--workers` processes rebuild their options
from the variables the parent set (`options_from_env`). A flag on the command line wins over its variable,
the variable over the default. A bad value exits 2 with one line naming the flag (or variable) and the value.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from webhook.admission.limits import Limits
from webhook.certs.sync import CertTarget
from webhook.core.redis_address import parse_redis_address
from webhook.core.settings import (
    KUBERAY_WORKER_RECONNECT_TIMEOUT_S,
    CARef,
    LookupFailure,
    SecretRef,
    Settings,
    parse_object_name,
    parse_positive_int,
    parse_server_name,
)

ENV_PREFIX = "RAY_FT_WEBHOOK_"
_MIB = 1024 * 1024
# More workers than this on one pod buys nothing but memory (each holds its own RayCluster cache).
MAX_WORKERS = 32


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _typed(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a converter so argparse reports its ValueError message (exit 2)."""
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _add(parser: Any, flag: str, help: str, convert: Callable[[str], Any] = str,
         default: Any = None, **kwargs: Any) -> None:
    """A flag whose default comes from its environment variable, named in the help."""
    env = _env_name(flag)
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument(flag, type=_typed(convert), default=None, help=f"{help}{shown} [env {env}]",
                        **kwargs)
    parser.set_defaults(**{"_env_" + flag.lstrip("-").replace("-", "_"): (env, convert, default)})


def resolve_env(parser: argparse.ArgumentParser, args: argparse.Namespace,
                environ: Mapping[str, str] | None = None, where: str = "") -> None:
    """Fill flags not given on the command line from RAY_FT_WEBHOOK_* in `environ` (default: the process's
    environment; `check --config-from`: the webhook's ConfigMap, named by `where` in errors), then from their
    defaults. An empty value means unset, as in the installed ConfigMap."""
    environ = os.environ if environ is None else environ
    for key in [k for k in vars(args) if k.startswith("_env_")]:
        env, convert, default = getattr(args, key)
        dest = key.removeprefix("_env_")
        delattr(args, key)
        if getattr(args, dest) is not None:
            continue
        raw = environ.get(env)
        if raw is None or raw == "":
            setattr(args, dest, default)
            continue
        try:
            setattr(args, dest, convert(raw))
        except ValueError as exc:
            parser.error(f"{where}{env}: {exc}")


def _ca_secret(text: str) -> CARef:
    return CARef.parse("Secret", text)


def _ca_configmap(text: str) -> CARef:
    return CARef.parse("ConfigMap", text)


def _add_defaults(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the admin's defaults (used when a RayCluster gives no value)")
    _add(group, "--default-redis-address", "Redis address for RAY_REDIS_ADDRESS, e.g. redis.ray:6379",
         parse_redis_address)
    _add(group, "--default-redis-password-secret",
         "Secret NAME or NAME/KEY (key default: password) for REDIS_PASSWORD", SecretRef.parse)
    _add(group, "--default-redis-ca-secret", "Secret NAME or NAME/KEY (key default: ca.crt) holding the CA of a "
         "rediss:// Redis, mounted for RAY_REDIS_CA_CERT", _ca_secret)
    _add(group, "--default-redis-ca-configmap", "the same from a ConfigMap", _ca_configmap)
    _add(group, "--default-redis-client-cert-secret", "kubernetes.io/tls Secret NAME: the client certificate for "
         "mutual TLS (RAY_REDIS_CLIENT_CERT, RAY_REDIS_CLIENT_KEY)", parse_object_name)
    _add(group, "--default-redis-server-name", "the TLS server name (SNI) Ray sends to Redis (RAY_REDIS_SERVER_NAME)",
         parse_server_name)
    _add(group, "--worker-reconnect-timeout-s", "seconds workers wait for GCS to come back",
         parse_positive_int, default=KUBERAY_WORKER_RECONNECT_TIMEOUT_S)
    _add(group, "--head-reconnect-timeout-s",
         "seconds the head waits for GCS (unset: Ray's 60 s, nothing injected)", parse_positive_int)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.default_redis_ca_secret is not None and args.default_redis_ca_configmap is not None:
        fail(args.command, "--default-redis-ca-secret and --default-redis-ca-configmap: give one, not both")
    return Settings(
        default_redis_address=args.default_redis_address,
        default_redis_password_secret=args.default_redis_password_secret,
        default_redis_ca=args.default_redis_ca_secret or args.default_redis_ca_configmap,
        default_redis_client_cert_secret=args.default_redis_client_cert_secret,
        default_redis_server_name=args.default_redis_server_name,
        worker_reconnect_timeout_s=args.worker_reconnect_timeout_s,
        head_reconnect_timeout_s=args.head_reconnect_timeout_s,
        on_lookup_failure=getattr(args, "on_lookup_failure", LookupFailure.DENY),
        deny_kuberay_conflicts=getattr(args, "deny_kuberay_conflicts", False),
        deny_shared_storage_namespace=getattr(args, "deny_shared_storage_namespace", False),
    )


def fail(command: str, message: str) -> NoReturn:
    print(f"ray-ft-webhook {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _port(text: str) -> int:
    port = parse_positive_int(text)
    if port > 65535:
        raise ValueError(f"{text!r} is not a TCP port")
    return port


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 30:
        raise ValueError(f"{text!r} is not between 0 and 30 seconds")
    return value


def _kib(text: str) -> int:
    """0 or a positive integer of KiB, at most 1 GiB."""
    value = 0 if text == "0" else parse_positive_int(text)
    if value > 1024 * 1024:
        raise ValueError(f"{text!r} is over 1048576 KiB (1 GiB)")
    return value


def _seconds_interval(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 3600:
        raise ValueError(f"{text!r} is not between 1 and 3600 seconds")
    return value


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _ip_list(text: str) -> tuple[str, ...]:
    return tuple(_ip(ip) for ip in text.split(",") if ip.strip())


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{text!r} is not debug, info, warning or error")
    return text.lower()


def _workers(text: str) -> int:
    count = parse_positive_int(text)
    if count > MAX_WORKERS:
        raise ValueError(f"{text!r} is more than {MAX_WORKERS} workers")
    return count


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _object_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.strip().partition("/")
    if not namespace or not sep or not name or "/" in name:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (argparse prints the whole usage block first); subcommand
    parsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


KUBECONFIG_HELP = "kubeconfig to reach the cluster (default: in-cluster, then $KUBECONFIG or ~/.kube/config)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ray-ft-webhook",
        description="Kubernetes mutating admission webhook that injects Ray GCS fault-tolerance settings "
        "into the head and worker pods of RayClusters.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTPS admission webhook",
                           description="Serve POST /mutate, /healthz, /readyz and /metrics over HTTPS.")
    _add(serve, "--host", "address to listen on", default="0.0.0.0")
    _add(serve, "--port", "HTTPS port", _port, default=8443)
    _add(serve, "--tls-cert", "serving certificate (PEM); reloaded when it changes", Path,
         default=Path("certs/tls.crt"))
    _add(serve, "--tls-key", "serving key (PEM)", Path, default=Path("certs/tls.key"))
    _add(serve, "--kubeconfig", KUBECONFIG_HELP, Path)
    _add(serve, "--rayclusters-from", "serve RayClusters from a folder of YAML/JSON manifests (no cluster)", Path)
    _add(serve, "--namespaces", "comma-separated namespaces to watch RayClusters in (default: all)", _namespaces)
    _add(serve, "--lookup-timeout-s", "time bound of the fallback GET on a cache miss", _seconds, default=2.0)
    _add(serve, "--on-lookup-failure", "when the RayCluster cannot be read: deny the pod or allow it untouched",
         LookupFailure, default=LookupFailure.DENY, choices=list(LookupFailure), metavar="{deny,allow}")
    _add(serve, "--log-level", "debug, info, warning or error", _log_level, default="info")
    _add(serve, "--workers", "worker processes sharing the port, each with its own RayCluster cache (use one "
         "per core; /metrics then shows the worker that answers the scrape)", _workers, default=1)
    _add(serve, "--reuse-port", "bind the port with SO_REUSEPORT, so a second `serve` can listen on the same "
         "address and connections are spread over both (rolling restarts without a closed port; one worker "
         "process only)", _bool, default=False, nargs="?", const=True, metavar="BOOL")
    _add(serve, "--events", "record an Event on the RayCluster when its head pod is admitted (what was "
         "injected, or why not); needs create/patch on events.k8s.io events", _bool, default=True, nargs="?",
         const=True, metavar="BOOL")
    validation = serve.add_argument_group(
        "/validate (RayClusters, RayServices and RayJobs being applied; findings are warnings unless made denials)")
    _add(validation, "--deny-kuberay-conflicts", "deny a RayCluster that breaks KubeRay's FT validation rules "
         "(KubeRay >= 1.3 refuses it later anyway)", _bool, default=False, nargs="?", const=True, metavar="BOOL")
    _add(validation, "--deny-shared-storage-namespace", "deny a RayCluster whose GCS storage (Redis address and "
         "storage namespace) another live RayCluster uses", _bool, default=False, nargs="?", const=True,
         metavar="BOOL")
    limits = serve.add_argument_group(
        "limits on clients (beyond each, the connection or request is refused and counted in /metrics)")
    d = Limits()
    _add(limits, "--max-connections", "connections at once, TLS handshakes included; more are closed at accept",
         parse_positive_int, default=d.max_connections)
    _add(limits, "--tls-handshake-timeout-s", "seconds a client has to complete the TLS handshake", _seconds,
         default=d.tls_handshake_timeout_s)
    _add(limits, "--request-head-timeout-s", "seconds a request has to send its whole head (408, close)", _seconds,
         default=d.head_timeout_s)
    _add(limits, "--request-body-timeout-s", "seconds a request has to send its body after the head (408, close)",
         _seconds, default=d.body_timeout_s)
    _add(limits, "--max-header-bytes", "size of a request head (431, close)", parse_positive_int,
         default=d.max_header_bytes)
    _add(limits, "--max-headers", "number of request headers (431, close)", parse_positive_int,
         default=d.max_headers)
    _add(limits, "--max-buffered-body-mib", "MiB of request bodies held at once, all requests together (503)",
         parse_positive_int, default=d.body_budget_bytes // _MIB)
    _add(limits, "--decision-memo-kib", "KiB of pod keys kept by the memo of /mutate decisions, which answers the "
         "next identical Ray pod of an unchanged RayCluster without planning it again (0: off)", _kib,
         default=d.decision_memo_bytes // 1024)
    managed = serve.add_argument_group(
        "self-managed certificates (all of --cert-secret, --webhook-config and --service turn it on)")
    _add(managed, "--cert-secret", "Secret holding the CA and serving certificate; the Lease holder creates and "
         "renews it, every replica writes its pair to --tls-cert/--tls-key")
    _add(managed, "--webhook-config", "Mutating- (and, if installed, Validating-) WebhookConfiguration whose "
         "caBundle is kept in step")
    _add(managed, "--service", "the webhook's Service name (certificate DNS names)")
    _add(managed, "--cert-sync-interval-s", "how often the Secret, Lease and caBundle are checked (also bounds how "
         "soon a changed certificate file is served)", _seconds_interval, default=30.0)
    _add(managed, "--cert-ips", "comma-separated extra IP SANs, e.g. 127.0.0.1 for a webhook reached by IP",
         _ip_list)
    _add(managed, "--cert-namespace", "namespace of the Secret, Lease and Service (default: $POD_NAMESPACE, "
         "then the in-cluster namespace)")
    _add_defaults(serve)

    render = sub.add_parser(
        "render", help="preview offline what the webhook would inject into a pod",
        description="Print the JSON Patch (or the patched pod) the server would answer, warnings on stderr. "
        "Exit 1 when the pod would be denied, 2 on unusable input.",
    )
    render.add_argument("--raycluster", type=Path, required=True, help="RayCluster manifest (YAML or JSON)")
    render.add_argument("--pod", type=Path, required=True, help="Pod manifest (YAML or JSON)")
    render.add_argument("--namespace-object", type=Path, help="the pod's Namespace manifest (YAML or JSON): its "
                        "ray-ft-webhook.io/ annotations are defaults for its RayClusters")
    render.add_argument("--output", choices=["patch", "pod"], default="patch", help="what to print (default: patch)")
    _add_defaults(render)

    check = sub.add_parser(
        "check", help="show, per live RayCluster, its GCS FT values and whether its head pod carries them",
        description="Read the RayClusters (and their head pods) of a namespace and print, per cluster: FT on or "
        "off and why, each value and its source, the findings, and whether the running head pod carries the "
        "configuration. The admin's defaults come from the flags below and RAY_FT_WEBHOOK_* (as for `serve`), "
        "or from the webhook's ConfigMap (--config-from; flags given still win). Exit 0 when every FT cluster "
        "is complete, 1 otherwise, 2 on unusable input.",
    )
    scope = check.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="the namespace to check (default: the kubeconfig's current "
                       "namespace, else default)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="check every namespace")
    check.add_argument("-o", "--output", choices=["table", "json"], default="table",
                       help="table (a summary, then a block per cluster) or json (default: table)")
    check.add_argument("--kubeconfig", type=Path, help=KUBECONFIG_HELP)
    check.add_argument("--config-from", metavar="NAMESPACE/NAME", type=_typed(_object_ref),
                       help="take the admin's defaults from the webhook's ConfigMap, e.g. "
                       "ray-ft-webhook/ray-ft-webhook-config (kustomize's NAME-<hash> is found too)")
    check.add_argument("--chunk-size", type=_typed(parse_positive_int), default=500,
                       help="objects per list request (default: 500)")
    _add_defaults(check)

    certs = sub.add_parser("certs", help="manage the webhook's TLS certificates")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    gen = certs_sub.add_parser(
        "generate", help="write a CA and an ECDSA P-256 serving certificate, print the caBundle",
        description="Write ca.crt, tls.crt and tls.key into DIR and print the base64 caBundle on stdout.",
    )
    gen.add_argument("--out", type=Path, required=True, help="folder to write into")
    gen.add_argument("--service", required=True, help="the webhook's Service name")
    gen.add_argument("--namespace", required=True, help="the Service's namespace")
    gen.add_argument("--ip", action="append", default=[], type=_typed(_ip),
                     help="an IP SAN, e.g. 127.0.0.1 (repeatable)")
    gen.add_argument("--days", type=_typed(parse_positive_int), default=365, help="validity (default: 365)")

    install = certs_sub.add_parser(
        "install", help="create or renew the certificate Secret and write the caBundle (like certgen create+patch)",
        description="Create the CA and serving certificate in a Secret (or renew what is due) and set the "
        "caBundle of every webhook in the Mutating- and (if installed) ValidatingWebhookConfiguration. "
        "Safe to run again.",
    )
    install.add_argument("--kubeconfig", type=Path, help=KUBECONFIG_HELP)
    install.add_argument("--namespace", required=True, help="namespace of the Secret and the Service")
    install.add_argument("--secret", default="ray-ft-webhook-tls", help="Secret name (default: ray-ft-webhook-tls)")
    install.add_argument("--webhook-config", default="ray-ft-webhook",
                         help="Mutating/ValidatingWebhookConfiguration name (default: ray-ft-webhook)")
    install.add_argument("--service", default="ray-ft-webhook", help="Service name (default: ray-ft-webhook)")
    install.add_argument("--ip", action="append", default=[], type=_typed(_ip), help="an extra IP SAN (repeatable)")

    uninstall = certs_sub.add_parser(
        "uninstall", help="delete the webhook configurations first, then the certificate Secret and Lease",
        description="Removes the webhook configuration before anything else, so a webhook being removed can "
        "never block pod creation. Then `kubectl delete -k manifests/overlays/<overlay>` removes the rest.",
    )
    uninstall.add_argument("--kubeconfig", type=Path, help=KUBECONFIG_HELP)
    uninstall.add_argument("--webhook-config", default="ray-ft-webhook", help="(default: ray-ft-webhook)")
    uninstall.add_argument("--namespace", help="namespace of the Secret and Lease (omit to keep them)")
    uninstall.add_argument("--secret", default="ray-ft-webhook-tls", help="(default: ray-ft-webhook-tls)")
    return parser


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` runs: where it listens, its certificate, where RayClusters come from."""

    host: str
    port: int
    tls_cert: Path
    tls_key: Path
    kubeconfig: Path | None = None
    rayclusters_from: Path | None = None
    namespaces: tuple[str, ...] = ()
    lookup_timeout_s: float = 2.0
    log_level: str = "info"
    # Set when the webhook manages its own certificate (self-managed mode).
    cert_target: CertTarget | None = None
    cert_sync_interval_s: float = 30.0
    workers: int = 1
    # Bind with SO_REUSEPORT (`--reuse-port`): processes of the same user share the address.
    reuse_port: bool = False
    # Record Events on RayClusters when their head pods are admitted (with the Kubernetes API only).
    events: bool = True
    limits: Limits = field(default_factory=Limits)


def cert_target_from(args: argparse.Namespace, command: str) -> CertTarget | None:
    from webhook.common import kube

    given = [args.cert_secret, args.webhook_config, args.service]
    if not any(given):
        return None
    if not all(given):
        fail(command, "--cert-secret, --webhook-config and --service go together")
    namespace = args.cert_namespace or kube.own_namespace()
    if not namespace:
        fail(command, "--cert-namespace is needed outside a cluster")
    return CertTarget(namespace=namespace, secret=args.cert_secret, webhook_config=args.webhook_config,
                      service=args.service, ips=args.cert_ips or ())


def serve_options(args: argparse.Namespace, cert_target: CertTarget | None) -> ServeOptions:
    if args.reuse_port and args.workers > 1:
        fail("serve", "--reuse-port needs --workers 1 (the workers of one process already share its socket)")
    return ServeOptions(
        host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
        kubeconfig=args.kubeconfig, rayclusters_from=args.rayclusters_from, namespaces=args.namespaces or (),
        lookup_timeout_s=args.lookup_timeout_s, log_level=args.log_level,
        cert_target=cert_target, cert_sync_interval_s=args.cert_sync_interval_s, workers=args.workers,
        reuse_port=args.reuse_port, events=args.events,
        limits=Limits(
            max_connections=args.max_connections, tls_handshake_timeout_s=args.tls_handshake_timeout_s,
            head_timeout_s=args.request_head_timeout_s, body_timeout_s=args.request_body_timeout_s,
            max_header_bytes=args.max_header_bytes, max_headers=args.max_headers,
            body_budget_bytes=args.max_buffered_body_mib * _MIB, decision_memo_bytes=args.decision_memo_kib * 1024,
        ),
    )


def _env_value(value: Any) -> str | None:
    """A resolved flag value written back as the text its converter parses (None: leave the flag unset)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, CARef):
        return f"{value.name}/{value.key}"
    return str(value)


def worker_environment(args: argparse.Namespace) -> dict[str, str | None]:
    """RAY_FT_WEBHOOK_* for every resolved `serve` flag, so `--workers` processes see what the parent saw
    (flags given on the command line included). None means: unset it."""
    skip = {"command", "certs_command"}
    return {ENV_PREFIX + dest.upper(): _env_value(value) for dest, value in vars(args).items() if dest not in skip}


def options_from_env() -> tuple[ServeOptions, Settings]:
    """In a `--workers` process: the options and settings the parent put into RAY_FT_WEBHOOK_*.
    Without certificate management: the parent alone syncs certificates."""
    parser = build_parser()
    args = parser.parse_args(["serve"])
    resolve_env(parser, args)
    return serve_options(args, cert_target=None), settings_from(args)


