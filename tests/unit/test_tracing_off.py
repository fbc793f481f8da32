"""effects.tracing: off unless an OTLP endpoint is set, and then free — no SDK, no thread."""

from __future__ import annotations

import os
import subprocess
import sys

from agenttask_operator.effects import tracing
from agenttask_operator.models import AgentTaskStatus

PROBE = """
import sys, threading
from agenttask_operator import handlers  # everything the operator imports at start
from agenttask_operator.effects import tracing
from agenttask_operator.models import AgentTaskStatus
assert tracing.setup() is False
assert tracing.new_context(AgentTaskStatus()) == {} and tracing.headers() == {}
assert not [m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
assert threading.active_count() == 1, threading.enumerate()
print("off")
"""


def test_off_without_an_endpoint_loads_no_sdk_and_starts_no_thread() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off"


def test_which_environment_turns_it_on() -> None:
    assert not tracing.enabled({})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.capture_content({})
    assert tracing.capture_content({tracing.CAPTURE_ENV: "True"})
    assert not tracing.capture_content({tracing.CAPTURE_ENV: "false"})


def test_new_ids_only_when_on_and_only_for_a_task_without_them() -> None:
    assert tracing.new_context(AgentTaskStatus()) == {}  # off
    assert tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        patch = tracing.new_context(AgentTaskStatus())
        ids = patch["traceContext"]
        assert len(ids["traceID"]) == 32 and len(ids["spanID"]) == 16
        status = AgentTaskStatus.model_validate(patch)
        assert status.trace_context is not None
        assert status.trace_context.traceparent == f"00-{ids['traceID']}-{ids['spanID']}-01"
        assert tracing.new_context(status) == {}  # kept: never replaced
        assert tracing.new_context(AgentTaskStatus()) != patch  # another task, other ids
    finally:
        tracing.shutdown()  # nothing was recorded: nothing is sent
    assert tracing.new_context(AgentTaskStatus()) == {}
