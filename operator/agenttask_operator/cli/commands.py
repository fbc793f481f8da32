"""The subcommands of ``kubectl agenttask``: each reads, prints, and maybe creates one object.

They raise :class:`~agenttask_operator.cli.client.CliError` for what kubectl would refuse (a
task that does not exist, no pending call, a task still running), which ``main`` prints on
stderr with exit code 1.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from agenttask_operator.cli import logview, objects, render
from agenttask_operator.cli.client import CliError, Reader
from agenttask_operator.cli.follow import Follower
from agenttask_operator.cli.objects import valid_step
from agenttask_operator.cli.output import Io, as_list, dump, now, raw_entries
from agenttask_operator.core.approval import call_digest
from agenttask_operator.effects.kube import GROUP, PLURAL
from agenttask_operator.models.approval import PLURAL as APPROVALS


async def get(
    reader: Reader,
    io: Io,
    namespace: str | None,
    name: str | None,
    output: str | None,
) -> None:
    """``get [NAME]`` / ``list``: the tasks with phase, step in flight, tokens and age."""
    if name is not None:
        if namespace is None:
            raise CliError("error: a resource cannot be retrieved by name across all namespaces")
        tasks = [await reader.task(namespace, name)]
    else:
        tasks = await reader.tasks(namespace)
    if output in ("json", "yaml"):
        io.print(dump(tasks[0] if name is not None else as_list(tasks), output))
        return
    if not tasks:
        where = "any namespace" if namespace is None else f"{namespace} namespace"
        io.err.write(f"No resources found in {where}.\n")
        return
    wide = output == "wide"
    io.print(render.task_rows(tasks, now(), wide=wide, namespaces=namespace is None))


async def steps(reader: Reader, io: Io, namespace: str, name: str, output: str | None) -> None:
    """``steps NAME``: one row per committed step, then the step in flight."""
    task = await reader.task(namespace, name)
    entries = await reader.transcript(task)
    if output in ("json", "yaml"):
        rows = [{"step": n, **e.to_api()} for n, e in enumerate(entries, start=1)]
        io.print(dump(rows, output))
        return
    io.print(render.step_rows(entries, task.get("status") or {}, now()))


async def logs(
    reader: Reader,
    io: Io,
    namespace: str,
    name: str,
    *,
    follow: bool,
    full: bool,
    output: str | None,
) -> None:
    """``logs NAME [-f]``: the transcript, readable (or its raw entries with ``-o``)."""
    task = await reader.task(namespace, name)
    limit = None if full else render.CLIP
    if follow:
        await Follower(reader, io, task, limit, output).run()
        return
    entries = await reader.transcript(task)
    if output in ("json", "yaml"):
        io.print(dump(raw_entries(entries, 1), output))
        return
    events = [ev for ev in map(logview.TaskEvent.of, await reader.events(task)) if ev is not None]
    lines = logview.transcript_lines(task, entries, events, now(), limit=limit)
    io.print("\n".join(lines) + "\n")


# --- approve / deny ----------------------------------------------------------------------


async def full_arguments(reader: Reader, task: dict[str, Any]) -> str | None:
    """The pending call's arguments as the model wrote them, from the transcript (status holds
    them clipped); None if the transcript may not be read (a reviewer's role need not allow it).
    """  # noqa: D205
    rec = task["status"]["approval"]
    try:
        entries = await reader.transcript(task)
    except ApiException as e:
        if e.status == 403:
            return None
        raise
    for entry in entries:
        if entry.kind == "LLM" and entry.iteration == rec.get("iteration"):
            for call in render.calls_of(entry):
                if call.get("id") == rec.get("toolCallId"):
                    return str((call.get("function") or {}).get("arguments", ""))
    return None


def pending(task: dict[str, Any], call: str | None) -> dict[str, Any]:
    """The call ``task`` waits for a decision on, or why there is none."""
    meta, status = task["metadata"], task.get("status") or {}
    rec = status.get("approval") or {}
    phase = status.get("phase") or "Pending"
    if phase != "WaitingForApproval" or not rec or rec.get("decision"):
        raise CliError(
            f"error: agenttask {meta['name']} has no tool call waiting for approval "
            f"(phase: {phase})"
        )
    if call is not None and call != rec.get("toolCallId"):
        raise CliError(
            f"error: call {call} of agenttask {meta['name']} is not waiting for approval; "
            f"the pending call is {rec.get('toolCallId')} ({rec.get('toolName')})"
        )
    return dict(rec)


PAST = {"approve": "approved", "deny": "denied"}


def confirm(io: Io, question: str, yes: bool, verb: str) -> None:
    """Go on with ``--yes``, or after the user says yes on a terminal; refuse without one."""
    if yes:
        return
    if not io.stdin.isatty():
        raise CliError(
            f"error: refusing to {verb} without confirmation: stdin is not a terminal; "
            "pass --yes to confirm"
        )
    io.err.write(f"{question} [y/N]: ")
    io.err.flush()
    if io.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError(f"error: not confirmed; nothing was {PAST[verb]}")


async def decide(
    reader: Reader,
    io: Io,
    namespace: str,
    name: str,
    call: str | None,
    *,
    decision: str,
    reason: str,
    yes: bool,
    dry_run: bool,
    output: str | None,
) -> None:
    """``approve`` / ``deny``: show the pending call, confirm, create the AgentToolApproval."""
    task = await reader.task(namespace, name)
    rec = pending(task, call)
    args = await full_arguments(reader, task)
    complete = args is not None
    if args is None:
        args = str(rec.get("arguments", ""))
        complete = call_digest(str(rec.get("toolName")), args) == rec.get("argumentsDigest")
    elif call_digest(str(rec.get("toolName")), args) != rec.get("argumentsDigest"):
        raise CliError(
            "error: the call's arguments in the transcript do not match "
            "status.approval.argumentsDigest; nothing was decided"
        )
    verb = "approve" if decision == "Approve" else "deny"
    user = await reader.whoami()
    io.err.write(logview.pending_call(task, args, now(), full_arguments=complete))
    confirm(io, f"{verb.capitalize()} this call as {user}?", yes, verb)
    body = objects.approval_body(task, decision, user, reason)
    if dry_run:
        io.print(dump(body, output or "yaml"))
        return
    try:
        created = await reader.create(APPROVALS, namespace, body)
    except ApiException as e:
        if e.status == 409:
            existing = await reader.kube.get_object(APPROVALS, namespace, body["metadata"]["name"])
            spec = (existing or {}).get("spec") or {}
            raise CliError(
                f"error: this call was decided already: agenttoolapproval "
                f"{body['metadata']['name']} ({spec.get('decision')} by {spec.get('decidedBy')})"
            ) from None
        raise
    if output in ("json", "yaml"):
        io.print(dump(created, output))
        return
    io.print(
        f"agenttoolapproval.{GROUP}/{created['metadata']['name']} created "
        f"({decision} {rec.get('toolName')} {rec.get('toolCallId')} as {user})\n"
    )


# --- retry -------------------------------------------------------------------------------


async def retry(
    reader: Reader,
    io: Io,
    namespace: str,
    name: str,
    *,
    from_step: int | None,
    dry_run: str | None,
    output: str | None,
) -> None:
    """``retry NAME [--from-step N]``: a new task forked from a failed one's transcript."""
    source = await reader.task(namespace, name)
    status = source.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        raise CliError(f"error: agenttask {name} succeeded; there is nothing to retry")
    if phase != "Failed":
        raise CliError(
            f"error: agenttask {name} is still running (phase: {phase}); "
            "retry it once it has failed"
        )
    if from_step is not None:
        committed = (status.get("transcript") or {}).get("entries")
        if committed is None:
            committed = len(await reader.transcript(source))
        why = valid_step(from_step, committed)
        if why is not None:
            raise CliError(f"error: --from-step {from_step}: {why}")
    taken = {t["metadata"]["name"] for t in await reader.tasks(namespace)}
    for _ in range(5):  # another retry may take the name meanwhile: take the next one
        body = objects.retry_body(source, objects.retry_name(name, taken), from_step)
        if dry_run == "client":
            io.print(dump(body, output or "yaml"))
            return
        try:
            created = await reader.create(PLURAL, namespace, body, dry_run=dry_run == "server")
        except ApiException as e:
            if e.status == 409:
                taken.add(body["metadata"]["name"])
                continue
            raise
        if output in ("json", "yaml"):
            io.print(dump(created, output))
        else:
            suffix = " (server dry run)" if dry_run == "server" else ""
            io.print(f"agenttask.{GROUP}/{created['metadata']['name']} created{suffix}\n")
        return
    raise CliError(f"error: could not find a free name for a retry of {name}")
