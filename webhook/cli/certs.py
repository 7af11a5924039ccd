"""`ray-ft-webhook certs generate|install|uninstall`: certificates by hand, like kube-webhook-certgen.

The work is done by `webhook.certs`; here API and file errors become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse

from webhook.certs.sync import CertTarget
from webhook.cli.options import fail


def run(args: argparse.Namespace) -> int:
    return {"generate": _certs_generate, "install": _certs_install, "uninstall": _certs_uninstall}[
        args.certs_command](args)


def _certs_install(args: argparse.Namespace) -> int:
    from urllib3.exceptions import HTTPError

    from webhook.certs.sync import CertSync
    from webhook.common import kube
    from webhook.common.errors import InputError
    from webhook.common.kubeapi import ApiError

    target = CertTarget(namespace=args.namespace, secret=args.secret, webhook_config=args.webhook_config,
                        service=args.service, ips=tuple(args.ip))
    try:
        sync = CertSync(kube.api_client(args.kubeconfig), target, files=None, identity="certs-install")
        # A CA rotation needs up to three passes (new CA stored, trusted, then used); stop when stable.
        for _ in range(3):
            if not sync.reconcile():
                break
    except InputError as exc:
        fail("certs install", str(exc))
    except ApiError as exc:
        fail("certs install", f"Kubernetes API: HTTP {exc.status} {exc.reason}")
    except (HTTPError, OSError) as exc:
        fail("certs install", f"cannot reach the Kubernetes API: {type(exc).__name__}")
    print(f"Secret {args.namespace}/{args.secret} and the caBundle of {args.webhook_config} are up to date")
    return 0


def _certs_uninstall(args: argparse.Namespace) -> int:
    from urllib3.exceptions import HTTPError

    from webhook.certs.sync import uninstall
    from webhook.common import kube
    from webhook.common.errors import InputError
    from webhook.common.kubeapi import ApiError

    try:
        deleted = uninstall(kube.api_client(args.kubeconfig), args.webhook_config, args.namespace, args.secret)
    except InputError as exc:
        fail("certs uninstall", str(exc))
    except ApiError as exc:
        fail("certs uninstall", f"Kubernetes API: HTTP {exc.status} {exc.reason}")
    except (HTTPError, OSError) as exc:
        fail("certs uninstall", f"cannot reach the Kubernetes API: {type(exc).__name__}")
    for item in deleted:
        print(f"deleted {item}")
    return 0


def _certs_generate(args: argparse.Namespace) -> int:
    from webhook.certs import generate as certs

    ca = certs.generate_ca(days=max(args.days, 3650))
    try:
        serving = certs.generate_leaf(ca, certs.service_dns_names(args.service, args.namespace), args.ip,
                                      days=args.days)
        certs.write_serving_set(args.out, ca, serving)
    except ValueError as exc:
        fail("certs generate", str(exc))
    except OSError as exc:
        fail("certs generate", f"{args.out}: {exc.strerror}")
    print(certs.ca_bundle(ca.cert_pem))
    return 0
