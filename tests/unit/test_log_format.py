"""Log formatting (effects/logs.py): JSON fields from the task loop's context and from kopf's
object reference, the plain prefix, kopf's retried-request level, and the flag's checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest

from agenttask_operator.__main__ import parse_args
from agenttask_operator.effects import logs
from agenttask_operator.models import Step


def record(
    msg: str, name: str = "agenttask_operator.x", level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def as_json(rec: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = json.loads(logs.JsonFormatter().format(rec))
    return out


def test_a_line_outside_a_task_has_only_the_basics() -> None:
    line = as_json(record("started"))
    assert set(line) == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO" and line["message"] == "started"
    assert str(line["time"]).endswith("Z")


async def test_lines_in_a_task_loop_and_its_asyncio_tasks_carry_the_task_and_step() -> None:
    step = Step(kind="Tool", iteration=2, tool_call_id="call_a", tool_name="echo")
    with logs.about("AgentTask", "ns", "t", "u-1"):
        logs.at_step(step, 3)

        async def inner() -> dict[str, object]:
            return as_json(record("in a child task", name="httpx2"))

        line = await asyncio.create_task(inner())
        logs.at_step(None)
        between = as_json(record("between steps"))
    assert line | {"time": 0} == {
        "time": 0, "level": "INFO", "logger": "httpx2", "message": "in a child task",
        "kind": "AgentTask", "namespace": "ns", "name": "t", "uid": "u-1",
        "step": "Tool 2 call_a", "attempt": 3, "tool": "echo",
    }  # fmt: skip
    assert "step" not in between and between["uid"] == "u-1"
    assert "uid" not in as_json(record("after the loop"))


def test_kopf_lines_name_their_object() -> None:
    ref = {"kind": "AgentTask", "namespace": "ns", "name": "t", "uid": "u-2"}
    line = as_json(record("Handler succeeded.", name="kopf.objects", k8s_ref=ref))
    assert (line["namespace"], line["name"], line["uid"]) == ("ns", "t", "u-2")
    with logs.about("AgentTask", "ns", "other", "u-3"):  # kopf's reference wins
        logs.at_step(Step(kind="LLM", iteration=1), 1)
        line = as_json(record("x", name="kopf.objects", k8s_ref=ref))
        logs.at_step(None)
    assert (line["name"], line["uid"]) == ("t", "u-2") and "step" not in line
    plain = logs.PlainFormatter().format(record("Handler succeeded.", "kopf.objects", k8s_ref=ref))
    assert plain.endswith("INFO kopf.objects: ns/t: Handler succeeded.")


def test_exceptions_go_in_a_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = as_json(rec)
    assert "ValueError: boom" in str(line["exception"])


def test_kopf_retried_requests_are_warnings_and_nothing_is_dropped() -> None:
    rec = record(
        "Request attempt #1/9 failed; will retry: GET …", "kopf._cogs.clients.api", logging.ERROR
    )
    assert logs.Levels().filter(rec) and rec.levelname == "WARNING"
    other = record("Request failed", "kopf._cogs.clients.api", logging.ERROR)
    assert logs.Levels().filter(other) and other.levelname == "ERROR"


def test_configure_keeps_the_rest_client_out_of_debug() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("json", verbose=True)
        assert root.level == logging.DEBUG
        assert not logging.getLogger("kubernetes_asyncio.client.rest").isEnabledFor(logging.DEBUG)
        assert isinstance(root.handlers[-1].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_format_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTTASK_LOG_FORMAT", raising=False)
    assert parse_args([]).log_format == "plain"
    monkeypatch.setenv("AGENTTASK_LOG_FORMAT", "json")
    assert parse_args([]).log_format == "json"
    assert parse_args(["--log-format", "plain"]).log_format == "plain"
    monkeypatch.setenv("AGENTTASK_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit):
        parse_args([])


def test_a_daemon_of_another_kind_names_its_object() -> None:
    body = {"metadata": {"namespace": "ns", "name": "nightly", "uid": "u-9"}}
    with logs.about_object("AgentTaskSchedule", body):
        line = as_json(record("next tick at …"))
    assert (line["kind"], line["name"], line["uid"]) == ("AgentTaskSchedule", "nightly", "u-9")
