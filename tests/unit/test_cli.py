"""``kubectl agenttask``'s pure parts: step numbers, tables, ages, the readable transcript, the
objects it creates, and its command line.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenttask_operator.cli import logview, objects, render
from agenttask_operator.cli.client import CliError
from agenttask_operator.cli.commands import confirm
from agenttask_operator.cli.main import parser
from agenttask_operator.cli.objects import valid_step
from agenttask_operator.cli.output import Io
from agenttask_operator.core.fork import numbered
from agenttask_operator.models import Entry

T0 = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def llm(
    iteration: int,
    calls: tuple[tuple[str, str, str], ...] = (),
    text: str | None = None,
    t: float = 1.0,
    tokens: int = 15,
    finish: str | None = None,
) -> Entry:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return Entry(
        kind="LLM",
        iteration=iteration,
        message=message,
        usage={"promptTokens": tokens - 5, "completionTokens": 5, "totalTokens": tokens},
        finish_reason=finish or ("tool_calls" if calls else "stop"),
        time=at(t + 0.5),
        start_time=at(t),
        attempts=1,
    )


def tool(iteration: int, cid: str, content: str, t: float = 2.0, **extra: Any) -> Entry:
    return Entry(
        kind="Tool",
        iteration=iteration,
        tool_call_id=cid,
        message={"role": "tool", "tool_call_id": cid, "content": content},
        time=at(t + 0.2),
        start_time=at(t),
        attempts=extra.pop("attempts", 1),
        **extra,
    )


DISK = (
    llm(1, (("call_check", "check_disk", "{}"),), t=1),
    tool(1, "call_check", '{"free": 1}', t=2),
    llm(2, (("call_clean", "clean_logs", '{"olderThanDays": 0}'),), t=3),
    tool(2, "call_clean", '{"deletedFiles": 3}', t=4, attempts=3),
    llm(3, text="Deleted 3 log files.", t=70, tokens=120),
)


def task(phase: str = "Succeeded", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "disk",
            "namespace": "ns",
            "uid": "0b1c2d3e-aaaa-bbbb-cccc-000000000000",
            "creationTimestamp": "2026-11-26T03:00:00Z",
        },
        "spec": {"input": "I ran out of disk space.", "model": {"name": "m"}},
        "status": {"phase": phase, "usage": {"totalTokens": 150}} | status,
    }


# --- step numbers ------------------------------------------------------------------------


def test_steps_are_the_committed_entries_counted_from_one() -> None:
    assert [n for n, _ in numbered(DISK)] == [1, 2, 3, 4, 5]
    assert valid_step(3, 5) is None and valid_step(0, 5) is None and valid_step(0, 0) is None
    assert valid_step(6, 5) == "step 6 does not exist: the task has steps 1 to 5 (0: copy none)"
    assert valid_step(-1, 5) is not None
    assert valid_step(1, 0) == (
        "step 1 does not exist: the task has no committed step (0: copy none)"
    )


# --- ages and tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"),
        (130, "2m10s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (7 * 3600 + 60, "7h1m"),
        (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (50 * 3600, "2d2h"),
        (8 * 86400, "8d"), (730 * 86400, "2y"), (731 * 86400, "2y1d"), (9 * 365 * 86400, "9y"),
    ],
)  # fmt: skip
def test_ages_are_kubectls(seconds: int, shown: str) -> None:
    assert render.human_duration(seconds) == shown


def test_a_table_looks_like_kubectls() -> None:
    text = render.table(("name", "phase"), [["a-long-name", "Running"], ["b", "Failed"]])
    assert text == "NAME          PHASE\na-long-name   Running\nb             Failed\n"


def test_task_rows_show_the_step_in_flight() -> None:
    running = task(
        "Running",
        currentStep={"kind": "Tool", "iteration": 2, "toolName": "clean_logs"},
        attempts=3,
        parallelCalls=[{"iteration": 2, "toolCallId": "c2"}],
    )
    done = task(reason="Completed")
    done["metadata"]["name"] = "old"
    text = render.task_rows([running, done], at(150), wide=True, namespaces=True)
    lines = text.splitlines()
    assert [re.split(r"\s{3,}", line) for line in lines] == [
        ["NAMESPACE", "NAME", "PHASE", "STEP", "TOKENS", "AGE", "REASON", "MODEL"],
        ["ns", "disk", "Running", "tool clean_logs, attempt 3 (+1 call)", "150", "2m30s", "<none>",
         "m"],
        ["ns", "old", "Succeeded", "-", "150", "2m30s", "Completed", "m"],
    ]  # fmt: skip
    # Aligned: every column starts where its header does.
    for header in ("STEP", "TOKENS", "MODEL"):
        col = lines[0].index(header)
        assert all(line[col - 3 : col] == "   " and line[col] != " " for line in lines)
    llm_step = task("Running", currentStep={"kind": "LLM", "iteration": 4}, attempts=1)
    assert render.in_flight(llm_step["status"]) == "LLM request 4"
    assert render.in_flight(task("Pending")["status"]) == "-"


def test_steps_table() -> None:
    status = task(
        "Running",
        currentStep={"kind": "LLM", "iteration": 4, "startTime": "2026-11-26T03:01:20Z"},
        attempts=2,
        nextRetryTime="2026-11-26T03:01:40Z",
    )["status"]
    lines = render.step_rows(DISK, status, at(90)).splitlines()
    assert [re.split(r"\s{3,}", line) for line in lines] == [
        ["STEP", "ITERATION", "KIND", "TOOL", "ATTEMPTS", "DURATION", "TOKENS", "OUTCOME"],
        ["1", "1", "LLM", "-", "1", "<1s", "15", "ToolCalls(1)"],
        ["2", "1", "Tool", "check_disk", "1", "<1s", "-", "OK"],
        ["3", "2", "LLM", "-", "1", "<1s", "15", "ToolCalls(1)"],
        ["4", "2", "Tool", "clean_logs", "3", "<1s", "-", "OK"],
        ["5", "3", "LLM", "-", "1", "<1s", "120", "Answer"],
        ["-", "4", "LLM", "-", "2", "10s", "-", "BackOff"],
    ]


def test_outcomes() -> None:
    note = {"decision": "Deny", "decidedBy": "alice", "reason": "no"}
    assert render.outcome(tool(1, "c", "denied", approval=note, is_error=True)) == "Denied by alice"
    approved = {"decision": "Approve", "decidedBy": "bob"}
    assert render.outcome(tool(1, "c", "ok", approval=approved)) == "OK (approved by bob)"
    assert render.outcome(tool(1, "c", "boom", is_error=True)) == "Error"
    assert render.outcome(llm(1, text="cut", finish="length")) == "Truncated"
    old = Entry(kind="Tool", iteration=1, tool_call_id="c", message={"content": "x"})
    assert render.took(old) == "-"  # entries of earlier versions have no start time


# --- the readable transcript -------------------------------------------------------------


def event(seconds: float, reason: str, message: str, type_: str = "Normal") -> logview.TaskEvent:
    return logview.TaskEvent(at(seconds).replace(microsecond=0), type_, reason, message)


def test_transcript_lines_put_events_next_to_their_steps() -> None:
    events = [
        event(0, "Started", "The agent loop has started."),
        event(
            4,
            "Retrying",
            "tool call 'clean_logs' (call_clean) of iteration 2, attempt 1 "
            "failed: HTTP 503; retry in 1.0s",
            "Warning",
        ),
        event(70, "Succeeded", "The model answered after 3 LLM call(s)."),
        event(70, "Retrying", "LLM request 3, attempt 1 failed: HTTP 429", "Warning"),
    ]
    lines = logview.transcript_lines(task(reason="Completed"), DISK, events, at(100))
    assert lines == [
        "user: I ran out of disk space.",
        "* 03:00:00 Started: The agent loop has started.",
        "--- step 1 · LLM request 1 · attempt 1 · <1s · 15 tokens",
        "call: check_disk({})  [call_check]",
        "--- step 2 · tool check_disk (call_check) · attempt 1 · <1s",
        'result: {"free": 1}',
        "--- step 3 · LLM request 2 · attempt 1 · <1s · 15 tokens",
        'call: clean_logs({"olderThanDays": 0})  [call_clean]',
        "! 03:00:04 Retrying: tool call 'clean_logs' (call_clean) of iteration 2, attempt 1 "
        "failed: HTTP 503; retry in 1.0s",
        "--- step 4 · tool clean_logs (call_clean) · attempt 3 · <1s",
        'result: {"deletedFiles": 3}',
        "! 03:01:10 Retrying: LLM request 3, attempt 1 failed: HTTP 429",
        "--- step 5 · LLM request 3 · attempt 1 · <1s · 120 tokens",
        "assistant: Deleted 3 log files.",
        "* 03:01:10 Succeeded: The model answered after 3 LLM call(s).",
        "=== Succeeded (Completed)",
    ]


def test_long_results_are_clipped_unless_full() -> None:
    entries = (llm(1, (("c1", "dump", "{}"),)), tool(1, "c1", "x" * 1200, is_error=True))
    clipped = logview.transcript_lines(task("Failed", reason="R", error="boom"), entries, [], T0)
    assert clipped[-2] == "error: " + "x" * 500 + "… [700 more characters; --full shows all]"
    assert clipped[-1] == "=== Failed (R): boom"
    full = logview.transcript_lines(task(), entries, [], T0, limit=None)
    assert full[-2] == "error: " + "x" * 1200


def test_a_running_task_ends_with_what_it_waits_for() -> None:
    status = task(
        "WaitingForApproval",
        currentStep={"kind": "Tool", "iteration": 1, "toolName": "apply"},
        approval={"toolName": "apply", "toolCallId": "call_1"},
        lastError="HTTP 503",
    )
    lines = logview.transcript_lines(status, (), [], T0)
    assert lines[-3:] == [
        "=== WaitingForApproval: tool apply in flight",
        "last error: HTTP 503",
        "waiting for approval of apply (call_1): kubectl agenttask approve|deny",
    ]


def test_multi_line_text_is_indented_under_its_label() -> None:
    lines = logview.entry_lines(1, llm(1, text="one\ntwo"), {}, None)
    assert lines[1] == "assistant: one\n           two"


# --- objects -----------------------------------------------------------------------------


def waiting_task(**approval: Any) -> dict[str, Any]:
    rec = {
        "iteration": 1,
        "toolCallId": "call_X1",
        "toolName": "apply",
        "arguments": "{}",
        "argumentsDigest": "sha256:abc",
    } | approval
    return task("WaitingForApproval", approval=rec)


def test_approval_objects() -> None:
    body = objects.approval_body(waiting_task(), "Approve", "alice@example.com", "ticket 42")
    name = body["metadata"]["name"]
    assert re.fullmatch(r"disk-call-x1-[0-9a-f]{8}", name)
    assert body["spec"] == {
        "task": "disk",
        "toolCallId": "call_X1",
        "argumentsDigest": "sha256:abc",
        "decision": "Approve",
        "reason": "ticket 42",
        "decidedBy": "alice@example.com",
    }
    # Approve and Deny of one pending call collide; a rerun of the same call needs a new one.
    assert objects.approval_body(waiting_task(), "Deny", "bob", "")["metadata"]["name"] == name
    rerun = waiting_task(purpose="Rerun", forInterruptions=1)
    assert objects.approval_name(rerun) != name
    long = waiting_task(toolCallId="C" * 300)
    long["metadata"]["name"] = "t" * 253
    assert len(objects.approval_name(long)) == 253


def test_retry_names_and_objects() -> None:
    assert objects.retry_name("disk", set()) == "disk-retry-1"
    assert objects.retry_name("disk", {"disk-retry-1", "disk-retry-2"}) == "disk-retry-3"
    assert len(objects.retry_name("d" * 253, set())) == 253
    source = task("Failed")
    source["metadata"]["labels"] = {"team": "a", "agenttask.dev/schedule": "nightly"}
    source["metadata"]["annotations"] = {
        "note": "keep",
        "kopf.zalando.org/last-handled-configuration": "{}",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    source["metadata"]["ownerReferences"] = [{"kind": "AgentTaskSchedule"}]
    source["spec"]["forkFrom"] = {"name": "older", "step": 2}
    body = objects.retry_body(source, "disk-retry-1", 3)
    assert body["metadata"] == {
        "name": "disk-retry-1",
        "namespace": "ns",
        "labels": {"team": "a"},
        "annotations": {"note": "keep"},
    }
    assert body["spec"] == {
        "input": "I ran out of disk space.",
        "model": {"name": "m"},
        "forkFrom": {"name": "disk", "step": 3},
    }
    assert source["spec"]["forkFrom"] == {"name": "older", "step": 2}  # the source is untouched
    assert objects.retry_body(source, "x", None)["spec"]["forkFrom"] == {"name": "disk"}


# --- the command line --------------------------------------------------------------------


def test_kubectl_flags_before_or_after_the_subcommand() -> None:
    p = parser()
    a = p.parse_args(["-n", "team", "--context", "prod", "logs", "t", "-f"])
    assert (a.namespace, a.context, a.command, a.name, a.follow) == (
        "team",
        "prod",
        "logs",
        "t",
        True,
    )
    a = p.parse_args(["approve", "t", "call_1", "--reason", "ok", "-y", "-n", "x"])
    assert (a.namespace, a.call, a.reason, a.yes, a.decision) == (
        "x",
        "call_1",
        "ok",
        True,
        "Approve",
    )
    a = p.parse_args(["-n", "before", "deny", "t", "-n", "after"])
    assert (a.namespace, a.decision) == ("after", "Deny")
    a = p.parse_args(["list", "-A", "-o", "wide"])
    assert (a.all_namespaces, a.output, a.namespace, a.kubeconfig) == (True, "wide", None, None)
    a = p.parse_args(["retry", "t", "--from-step", "3", "--dry-run"])
    assert (a.from_step, a.dry_run) == (3, "client")


class Terminal(io.StringIO):
    """A stdin that says it is a terminal, with the user's answer in it."""

    def isatty(self) -> bool:
        return True


def test_confirmation_is_asked_on_a_terminal_and_required_without_one() -> None:
    err = io.StringIO()
    confirm(Io(err=err, stdin=Terminal("y\n")), "Approve this call as alice?", False, "approve")
    assert err.getvalue() == "Approve this call as alice? [y/N]: "
    with pytest.raises(CliError, match="error: not confirmed; nothing was denied"):
        confirm(Io(err=io.StringIO(), stdin=Terminal("\n")), "Deny?", False, "deny")
    with pytest.raises(CliError, match="stdin is not a terminal; pass --yes to confirm"):
        confirm(Io(err=io.StringIO(), stdin=io.StringIO("y\n")), "Approve?", False, "approve")
    confirm(Io(err=io.StringIO(), stdin=io.StringIO("")), "Approve?", True, "approve")  # --yes


def test_the_pending_call_is_shown_in_full() -> None:
    t = waiting_task(purpose="Rerun", requestedAt="2026-11-26T02:59:00Z")
    text = logview.pending_call(t, '{"change": "scale web to 3"}', T0, full_arguments=True)
    assert text.splitlines() == [
        "Task:      ns/disk (waiting 60s)",
        "Tool:      apply",
        "Call:      call_X1 (iteration 1)",
        "Arguments: {",
        '             "change": "scale web to 3"',
        "           }",
        "Digest:    sha256:abc",
        "Purpose:   Rerun: the operator stopped while this call ran; its effect is unknown",
    ]
    clipped = logview.pending_call(t, "{", T0, full_arguments=False)
    assert "Arguments: {\n           [clipped in status.approval]" in clipped
