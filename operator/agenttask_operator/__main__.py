"""Command line: ``agenttask-operator`` / ``python -m agenttask_operator``.

Starts kopf against the cluster that ``KUBECONFIG`` (or the in-cluster service account) names.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import kopf

from agenttask_operator import handlers
from agenttask_operator.core.urls import valid_pattern
from agenttask_operator.effects import logs
from agenttask_operator.handlers.context import Settings, scrub_openai_environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the operator's flags."""
    ap = argparse.ArgumentParser(
        prog="agenttask-operator", description="Run LLM agent tasks as durable AgentTask resources."
    )
    ap.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    ap.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    ap.add_argument(
        "--workspace",
        metavar="DIR",
        default=os.environ.get("AGENTTASK_WORKSPACE"),
        help="directory the built-in tools work on (default: $AGENTTASK_WORKSPACE)",
    )
    ap.add_argument(
        "--allowed-host",
        metavar="PATTERN",
        action="append",
        default=None,
        help=(
            "outbound allow-list (repeatable): a task's model baseURL and HTTP tool URLs must "
            "match one of these hosts — api.example.com, *.svc.cluster.local, 10.0.0.0/8, "
            "each optionally :PORT — or the task fails URLNotAllowed before any request; "
            "default $AGENTTASK_ALLOWED_HOSTS (comma-separated), empty: every host"
        ),
    )
    ap.add_argument(
        "--builtin-tools-namespace",
        metavar="NS",
        action="append",
        default=None,
        help=(
            "namespace whose tasks may use the built-in tools (repeatable); they work on the "
            "operator's own workspace, shared by every namespace. Default "
            "$AGENTTASK_BUILTIN_NAMESPACES (comma-separated), empty: every namespace"
        ),
    )
    ap.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    ap.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=os.environ.get("AGENTTASK_LOG_FORMAT") or "plain",
        help=(
            "plain: one line of text per record (default; for a terminal); json: one JSON "
            "object per line with namespace, name, uid, step and attempt on every line about "
            "a task (the chart's default). Default $AGENTTASK_LOG_FORMAT"
        ),
    )
    args = ap.parse_args(argv)
    if args.log_format not in logs.FORMATS:  # from the environment: argparse checks flags only
        ap.error(f"AGENTTASK_LOG_FORMAT: {args.log_format!r} is not one of plain, json")
    bad = [p for p in args.allowed_host or () if not valid_pattern(p)]
    if bad:
        ap.error(f"--allowed-host: not a host, *.domain, IP or CIDR pattern: {', '.join(bad)}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by flags; then OPENAI_* leave the environment."""
    settings = Settings.from_env()
    scrub_openai_environment()
    if args.workspace:
        settings = replace(settings, workspace=Path(args.workspace).resolve())
    if args.allowed_host is not None:
        settings = replace(settings, allowed_hosts=tuple(args.allowed_host))
    if args.builtin_tools_namespace is not None:
        settings = replace(settings, builtin_namespaces=tuple(args.builtin_tools_namespace))
    return settings


def main(argv: list[str] | None = None) -> int:
    """Run the operator until interrupted."""
    args = parse_args(argv)
    logs.configure(args.log_format, verbose=args.verbose)
    if not args.verbose:  # one "Handler succeeded" line per watch event is noise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # One INFO line per HTTP request; and the MCP SDK logs, with a traceback, every answer
        # it cannot read, which effects.mcp then classifies and reports on the object itself.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        logging.getLogger("mcp").setLevel(logging.CRITICAL)
    settings = settings_from(args)
    handlers.register()
    kopf.run(
        memo=kopf.Memo(settings=settings),
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
