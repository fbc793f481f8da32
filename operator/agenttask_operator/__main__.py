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
from agenttask_operator.handlers.context import Settings


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
    ap.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the operator until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one "Handler succeeded" line per watch event is noise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = Settings.from_env()
    if args.workspace:
        settings = replace(settings, workspace=Path(args.workspace).resolve())
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
