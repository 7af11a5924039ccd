"""The `ray-ft-webhook` command line: parse the options, run one command, turn its errors into exit codes.

Commands: `serve` (cli.serve), `render` (cli.render), `check` (cli.check), `certs ...` (cli.certs). The flags
and their RAY_FT_WEBHOOK_* variables are declared in cli.options. Exit codes: 0 success, 1 the pod is denied
(render) or a FT RayCluster is incomplete (check), 2 unusable input or configuration (one line on stderr,
never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import orjson

from webhook.cli import certs
from webhook.cli.options import (
    build_parser,
    cert_target_from,
    fail,
    resolve_env,
    serve_options,
    settings_from,
    worker_environment,
)


def _serve(args: argparse.Namespace) -> int:
    from webhook.certs.tls import TLSError
    from webhook.cli import serve
    from webhook.common import logs
    from webhook.common.errors import InputError

    logs.configure(args.log_level)
    opts = serve_options(args, cert_target_from(args, "serve"))
    if opts.workers > 1:
        for name, value in worker_environment(args).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        serve.run(opts, settings_from(args))
    except (InputError, TLSError) as exc:
        fail("serve", str(exc))
    return 0


def _render(args: argparse.Namespace) -> int:
    from webhook.cli.render import render
    from webhook.common.errors import InputError
    from webhook.common.manifests import load_one

    try:
        namespace = load_one(args.namespace_object, "Namespace") if args.namespace_object is not None else None
        result = render(load_one(args.raycluster, "RayCluster"), load_one(args.pod, "Pod"), settings_from(args),
                        namespace)
    except InputError as exc:
        fail("render", str(exc))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.event is not None and result.denied is None:  # a denial's Event repeats the denial
        print(f"event on the RayCluster: {result.event.type} {result.event.reason}: {result.event.note}",
              file=sys.stderr)
    if result.denied is not None:
        print(f"denied: {result.denied}", file=sys.stderr)
        return 1
    if result.skipped is not None:
        print(f"skipped: {result.skipped}", file=sys.stderr)
    out = result.patch if args.output == "patch" else result.pod
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "render"):
        resolve_env(parser, args)
    if args.command == "check":
        from webhook.cli import check

        return check.run(args)
    handlers = {"serve": _serve, "render": _render, "certs": certs.run}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
