"""``kubectl-agenttask``: the command line, its flags, and kubectl-style errors.

kubectl runs ``kubectl-agenttask`` (found on ``PATH``) for ``kubectl agenttask …`` and passes
every argument on, so the flags kubectl users know are parsed here: ``--kubeconfig``,
``--context``, ``-n/--namespace``, ``-A/--all-namespaces``, ``-o``. They may come before or
after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from agenttask_operator.cli import commands
from agenttask_operator.cli.client import CliError, Reader, connect, from_server
from agenttask_operator.cli.output import Io

PROG = "kubectl agenttask"
EXAMPLES = """\
examples:
  kubectl agenttask list -A
  kubectl agenttask steps disk-cleanup
  kubectl agenttask logs disk-cleanup -f
  kubectl agenttask approve deploy-app --reason "capacity ticket 42"
  kubectl agenttask deny deploy-app call_x1 --reason "not in prod" --yes
  kubectl agenttask retry disk-cleanup --from-step 3
"""


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The kubectl flags, accepted before and after the subcommand (a value given after it
    wins; ``defaults=False`` leaves them unset so that it does not override one given before).
    """  # noqa: D205
    p = argparse.ArgumentParser(add_help=False)
    d = None if defaults else argparse.SUPPRESS
    p.add_argument("--kubeconfig", default=d, help="path to the kubeconfig file to use")
    p.add_argument("--context", default=d, help="the kubeconfig context to use")
    p.add_argument("-n", "--namespace", default=d, help="the namespace (default: the context's)")
    return p


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Read AgentTasks, their steps and transcripts; approve, deny and retry.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(True)],
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(False)

    def add(name: str, help_: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[common], aliases=list(aliases))

    for name in ("get", "list"):
        p = add(name, "tasks with phase, step in flight, tokens and age")
        if name == "get":
            p.add_argument("name", nargs="?", help="one task (default: all of the namespace)")
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
        p.add_argument("-o", "--output", choices=("wide", "json", "yaml"))

    p = add("steps", "one line per committed step, then the step in flight")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=("json", "yaml"))

    p = add("logs", "the transcript, readable")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="print steps as they come")
    p.add_argument("--full", action="store_true", help="do not clip tool results and arguments")
    p.add_argument("-o", "--output", choices=("json", "yaml"), help="the raw entries")

    for name, verb in (("approve", "Approve"), ("deny", "Deny")):
        p = add(name, f"{verb} the tool call the task waits for (an AgentToolApproval)")
        p.add_argument("name")
        p.add_argument("call", nargs="?", help="the pending call's id (checked if given)")
        p.add_argument("--reason", default="", help="why (recorded with the decision)")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--dry-run", action="store_true", help="print the approval, create nothing")
        p.add_argument("-o", "--output", choices=("json", "yaml"))
        p.set_defaults(decision=verb)

    p = add("retry", "a new task <name>-retry-<n> that continues a failed task's transcript")
    p.add_argument("name")
    p.add_argument("--from-step", type=int, help="keep steps 1..N (default: up to the failure)")
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        choices=("client", "server"),
        help="client: print the task; server: let the API server check it; create nothing",
    )
    p.add_argument("-o", "--output", choices=("json", "yaml"))
    return top


async def run(args: argparse.Namespace) -> None:
    """Connect and run the subcommand."""
    target = await connect(args.kubeconfig, args.context, args.namespace)
    reader, io = Reader(target.api), Io()
    ns = target.namespace
    try:
        match args.command:
            case "get" | "list":
                scope = None if args.all_namespaces else ns
                name = getattr(args, "name", None)
                await commands.get(reader, io, scope, name, args.output)
            case "steps":
                await commands.steps(reader, io, ns, args.name, args.output)
            case "logs":
                await commands.logs(
                    reader, io, ns, args.name, follow=args.follow, full=args.full,
                    output=args.output,
                )  # fmt: skip
            case "approve" | "deny":
                await commands.decide(
                    reader, io, ns, args.name, args.call, decision=args.decision,
                    reason=args.reason, yes=args.yes, dry_run=args.dry_run, output=args.output,
                )  # fmt: skip
            case "retry":
                await commands.retry(
                    reader, io, ns, args.name, from_step=args.from_step, dry_run=args.dry_run,
                    output=args.output,
                )  # fmt: skip
    except ApiException as e:
        raise from_server(e) from None
    except aiohttp.ClientConnectionError as e:
        raise CliError(
            f"The connection to the server {target.host} was refused - did you specify the "
            f"right host or port? ({e})"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as e:
        raise CliError(f"error: talking to the server {target.host}: {e!r}") from None
    finally:
        await target.api.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: 0 on success, 1 with a message on stderr otherwise."""
    args = parser().parse_args(argv)
    try:
        asyncio.run(run(args))
    except CliError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
