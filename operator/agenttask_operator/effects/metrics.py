"""Prometheus metrics: the registry, what is measured, and the ``/metrics`` endpoint.

Here are the metric objects, the small typed functions the loop and the effects record with,
and the server of ``--metrics-port``.

Every name follows Prometheus' conventions (``agenttask_…_total`` counters, ``_seconds``
histograms in base units) and every label has a bounded set of values: phases, CamelCase
reasons, step kinds and outcomes, error classes, model names as configured, and tool names a
task declared or resolved (anything else, e.g. a name the model made up, is ``other``). Never a
task's name, namespace or uid.

Counters count what *this* replica did, so a sum over replicas is the total. The gauges
(``agenttask_tasks``, ``agenttask_tasks_queued``, ``agenttask_approvals_pending``) are computed
at scrape time from the watch, which shows every task to every replica: each replica counts
only the tasks assigned to it (``Context.assigned_here``), so they too add up over replicas
(docs/observability.md).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agenttask_operator.core.answers import Reply
from agenttask_operator.core.errors import Failure
from agenttask_operator.models import TERMINAL_PHASES, ModelSpec

OTHER = "other"  # the label value of anything outside a bounded set

# No ``_created`` twin of every series: half the series, never read. (The function is untyped.)
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

TASKS_STARTED = Counter(
    "agenttask_tasks_started", "Tasks this replica started (status.startTime set).",
    registry=REGISTRY,
)  # fmt: skip
TASKS_FINISHED = Counter(
    "agenttask_tasks_finished",
    "Tasks this replica ended, by phase (Succeeded, Failed) and reason (Completed, "
    "RetriesExhausted, …).",
    ["phase", "reason"],
    registry=REGISTRY,
)
STEPS = Counter(
    "agenttask_steps",
    "Step attempts (one LLM request or one tool call) by kind (LLM, Tool) and outcome: ok, "
    "tool_error (stored, the tool's answer is an error), transient_error (to be retried), "
    "permanent_error.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
LLM_DURATION = Histogram(
    "agenttask_llm_request_duration_seconds",
    "Chat-completion requests, from sending to the whole answer read, by model.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)
LLM_ERRORS = Counter(
    "agenttask_llm_errors",
    "Failed chat-completion requests by model and class (rate_limit, timeout, server_error, "
    "connection, invalid_response, auth, not_found, invalid_request, client_error, other).",
    ["model", "class"],
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "agenttask_llm_tokens",
    "Tokens the model server reported, by model and kind (prompt, completion).",
    ["model", "kind"],
    registry=REGISTRY,
)
TOOL_DURATION = Histogram(
    "agenttask_tool_call_duration_seconds",
    "Tool calls (built-in, HTTP, MCP) by tool, from start to result.",
    ["tool"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
TOOL_ERRORS = Counter(
    "agenttask_tool_errors",
    "Failed tool calls by tool and class (tool_error: the tool answered with an error; "
    "timeout, unavailable, refused, exception, other).",
    ["tool", "class"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "agenttask_retries",
    "Failed attempts scheduled for a retry, by step kind and the failure's reason "
    "(ModelUnavailable, ModelTimeout, ToolUnavailable, StepTimeout, …).",
    ["kind", "reason"],
    registry=REGISTRY,
)
INTERRUPTIONS = Counter(
    "agenttask_interruptions",
    "Steps this replica stopped in flight, by kind and reason (stopped: the operator stopped "
    "or the task was deleted; taken_over: another replica took the task; lease_lost).",
    ["kind", "reason"],
    registry=REGISTRY,
)
RERUNS = Counter(
    "agenttask_interrupted_reruns",
    "Interrupted steps run again (after a stop, a crash or a handover), by kind.",
    ["kind"],
    registry=REGISTRY,
)
TRANSCRIPT_BYTES = Counter(
    "agenttask_transcript_bytes_written",
    "Bytes of transcript data written (the transcript.jsonl of each segment ConfigMap).",
    registry=REGISTRY,
)
TRANSCRIPT_SEGMENTS = Counter(
    "agenttask_transcript_segments_written",
    "Transcript segment ConfigMaps created.",
    registry=REGISTRY,
)

OUTCOMES = {  # present from the start, so that rate() sees the first increase
    "LLM": ("ok", "transient_error", "permanent_error"),
    "Tool": ("ok", "tool_error", "transient_error", "permanent_error"),
}
for _kind, _outcomes in OUTCOMES.items():
    for _outcome in _outcomes:
        STEPS.labels(_kind, _outcome)


# --- tasks -------------------------------------------------------------------------------------


def status_written(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
    """A status write of this replica went through: count a start and an end it made."""
    old, new = before or {}, after or {}
    if new.get("startTime") and not old.get("startTime"):
        TASKS_STARTED.inc()
    phase = new.get("phase")
    if phase in TERMINAL_PHASES and old.get("phase") != phase:
        TASKS_FINISHED.labels(phase, str(new.get("reason") or "")).inc()


class TaskIndex(Collector):
    """Phase, reason and a pending approval of every task the watch showed; collected as
    gauges over the tasks :attr:`mine` says this replica is assigned.
    """  # noqa: D205

    def __init__(self) -> None:
        """Empty; :attr:`mine` counts every task until the operator sets it."""
        self.tasks: dict[str, tuple[str, str, bool]] = {}
        self.mine: Callable[[str], bool] = lambda uid: True

    def observe(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """Keep up with one watch event of an AgentTask."""
        uid = (obj.get("metadata") or {}).get("uid")
        if not isinstance(uid, str):
            return
        if kind == "DELETED":
            self.tasks.pop(uid, None)
            return
        st = obj.get("status") or {}
        approval = st.get("approval") or {}
        pending = st.get("phase") == "WaitingForApproval" or (
            bool(approval) and approval.get("decision") is None
        )
        phase = str(st.get("phase") or "Pending")
        waits = pending and phase not in TERMINAL_PHASES
        self.tasks[uid] = (phase, str(st.get("reason") or ""), waits)

    def collect(self) -> Iterator[Metric]:
        """``agenttask_tasks``, ``agenttask_tasks_queued``, ``agenttask_approvals_pending``."""
        counts: dict[tuple[str, str], int] = {}
        queued = pending = 0
        for uid, (phase, reason, waits) in list(self.tasks.items()):
            if not self.mine(uid):
                continue
            counts[phase, reason] = counts.get((phase, reason), 0) + 1
            queued += phase == "Pending" and reason == "Queued"
            pending += waits
        tasks = GaugeMetricFamily(
            "agenttask_tasks",
            "Tasks assigned to this replica, by phase and reason (sum over replicas: all tasks).",
            labels=["phase", "reason"],
        )
        for (phase, reason), n in sorted(counts.items()):
            tasks.add_metric([phase, reason], n)
        yield tasks
        yield GaugeMetricFamily(
            "agenttask_tasks_queued",
            "Tasks assigned to this replica that wait for a place in a concurrency limit.",
            value=queued,
        )
        yield GaugeMetricFamily(
            "agenttask_approvals_pending",
            "Tasks assigned to this replica that wait for an AgentToolApproval.",
            value=pending,
        )


TASKS = TaskIndex()
REGISTRY.register(TASKS)


# --- steps -------------------------------------------------------------------------------------


def step_stored(kind: str, is_error: bool) -> None:
    """An attempt's result was stored (a tool's error answer too)."""
    STEPS.labels(kind, "tool_error" if is_error else "ok").inc()


def step_failed(kind: str, failure: Failure) -> None:
    """An attempt failed (its result was not stored)."""
    STEPS.labels(kind, "transient_error" if failure.transient else "permanent_error").inc()


def retries(
    kinds: Sequence[str], failures: Sequence[Failure | None], patch: Mapping[str, Any]
) -> None:
    """A batch's failures were recorded with ``patch``: unless it ended the task, each failure
    is retried.
    """  # noqa: D205
    if "phase" in patch:
        return
    for kind, failure in zip(kinds, failures, strict=True):
        if failure is not None:
            RETRIES.labels(kind, failure.reason).inc()


INTERRUPTION_REASONS = {
    "stopped": "stopped",
    "another replica took the task": "taken_over",
    "the Lease was not renewed": "lease_lost",
}


def interrupted(kinds: Iterable[str], why: str) -> None:
    """This replica stopped the steps of ``kinds`` in flight, for ``why`` (the runner's words)."""
    reason = INTERRUPTION_REASONS.get(why, OTHER)
    for kind in kinds:
        INTERRUPTIONS.labels(kind, reason).inc()


def rerun(kind: str) -> None:
    """An interrupted step runs again."""
    RERUNS.labels(kind).inc()


def transcript_segment(data: str) -> None:
    """A transcript segment holding ``data`` was created."""
    TRANSCRIPT_SEGMENTS.inc()
    TRANSCRIPT_BYTES.inc(len(data.encode()))


# --- LLM requests ------------------------------------------------------------------------------

LLM_PERMANENT_CLASSES = {
    "ModelResponseInvalid": "invalid_response",
    "ModelAuthFailed": "auth",
    "ModelPermissionDenied": "auth",
    "ModelNotFound": "not_found",
    "ModelRequestInvalid": "invalid_request",
    "ModelRequestFailed": "client_error",
}


def llm_error_class(failure: Failure) -> str:
    """The class of a failed LLM request, from what ``effects.llm`` made of it."""
    status = failure.status
    if status == 429:
        return "rate_limit"
    if status == 408 or failure.reason == "ModelTimeout":
        return "timeout"
    if status is not None and status >= 500:
        return "server_error"
    if failure.reason in LLM_PERMANENT_CLASSES:
        return LLM_PERMANENT_CLASSES[failure.reason]
    if failure.reason == "ModelUnavailable" and status is None:
        return "connection"
    return OTHER


def llm_request(model: str, seconds: float, reply: Reply | None, failure: Failure | None) -> None:
    """One chat-completion request: its duration, its tokens or its error."""
    LLM_DURATION.labels(model).observe(seconds)
    if failure is not None:
        LLM_ERRORS.labels(model, llm_error_class(failure)).inc()
    if reply is not None and reply.usage is not None:
        LLM_TOKENS.labels(model, "prompt").inc(reply.usage.prompt_tokens)
        LLM_TOKENS.labels(model, "completion").inc(reply.usage.completion_tokens)


P = ParamSpec("P")
R = TypeVar("R")


def _timed(
    fn: Callable[P, Awaitable[R]],
    label: Callable[..., str],
    record: Callable[[str, float, R | None, Failure | None], None],
) -> Callable[P, Awaitable[R]]:
    """``fn``, a function that makes one request, timed: ``label`` (called with its arguments)
    names what it calls; every call that ends (answered, or failed with a ``StepFailed``; not
    one cancelled from outside) is given to ``record`` with its duration.
    """  # noqa: D205

    @functools.wraps(fn)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        name = label(*args, **kwargs)
        start = time.perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except Exception as e:
            failure = getattr(e, "failure", None)
            if isinstance(failure, Failure):
                record(name, time.perf_counter() - start, None, failure)
            raise
        record(name, time.perf_counter() - start, result, None)
        return result

    return timed


def _model_name(*args: Any, **kwargs: Any) -> str:
    model = args[0] if args else kwargs.get("model")
    return model.name if isinstance(model, ModelSpec) else OTHER


def timed_chat(fn: Callable[P, Awaitable[Reply]]) -> Callable[P, Awaitable[Reply]]:
    """Decorate ``effects.llm.chat`` (its first argument: the ModelSpec): every request that
    ends (answered or failed; not one cancelled from outside) is recorded.
    """  # noqa: D205
    return _timed(fn, _model_name, llm_request)


# --- tool calls --------------------------------------------------------------------------------

TOOL_CLASSES = {
    "ToolTimeout": "timeout",
    "ToolUnavailable": "unavailable",
    "ToolServerUnavailable": "unavailable",
    "ToolServerRefused": "refused",
    "ToolServerChanged": "refused",
    "ToolServerNotFound": "refused",
    "URLNotAllowed": "refused",
    "SecretUnavailable": "unavailable",
    "StepFailed": "exception",  # a built-in raised
}


def tool_error_class(failure: Failure) -> str:
    """The class of a failed tool call."""
    return TOOL_CLASSES.get(failure.reason, OTHER)


class Answer(Protocol):
    """What a tool call returns (``effects.tools.ToolResult``)."""

    @property
    def is_error(self) -> bool:
        """Whether the answer is an error for the model."""


A = TypeVar("A", bound=Answer)


def tool_call(tool: str, seconds: float, answer: Answer | None, failure: Failure | None) -> None:
    """One tool call of ``tool`` (a declared or resolved name, or :data:`OTHER`)."""
    TOOL_DURATION.labels(tool).observe(seconds)
    if failure is not None:
        TOOL_ERRORS.labels(tool, tool_error_class(failure)).inc()
    elif answer is not None and answer.is_error:
        TOOL_ERRORS.labels(tool, "tool_error").inc()


def timed_tool(
    label: Callable[..., str],
) -> Callable[[Callable[P, Awaitable[A]]], Callable[P, Awaitable[A]]]:
    """Decorate a function that runs one tool call; ``label`` (called with its arguments)
    names the tool for the labels, :data:`OTHER` for a name that is neither declared nor
    resolved.
    """  # noqa: D205

    def decorate(fn: Callable[P, Awaitable[A]]) -> Callable[P, Awaitable[A]]:
        return _timed(fn, label, tool_call)

    return decorate


# --- the endpoint ------------------------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})


async def serve(port: int, host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104 - a Pod's port
    """Serve ``/metrics`` on ``host:port`` in the running event loop; stop with ``cleanup()``."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
