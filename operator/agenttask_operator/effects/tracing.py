"""OpenTelemetry traces of tasks after the GenAI semantic conventions, exported over OTLP/HTTP.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(and ``OTEL_SDK_DISABLED`` is not ``true``). Off, nothing of the SDK is imported, no span object
is made and no thread runs; every function here returns at once. On, the SDK's
``BatchSpanProcessor`` exports in a thread of its own, configured by the standard ``OTEL_*``
variables (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES`` …).

One trace per task. Its ids are chosen when the task starts and written to
``status.traceContext`` in the same status write as the step's intent (no request of its own);
the task's spans, from whichever operator process runs them, belong to that trace:

- ``invoke_agent {task name}`` (INTERNAL): the root, from ``status.startTime`` to the end of
  the task, exported once by the process that writes the end, *with the stored ids* — so the
  spans recorded before a restart and after it have the same, single parent;
- ``chat {gen_ai.request.model}`` (CLIENT): one per LLM request;
- ``execute_tool {gen_ai.tool.name}`` (INTERNAL): one per tool call.

Retries are child spans of the root: every attempt is a request of its own, separated from the
last by a backoff that may outlast the process, so each is a span with its own duration and
outcome, numbered by ``agenttask.step.attempt`` (as the HTTP conventions do with a span per
resend). A failed attempt has ``error.type`` (``429``, ``500``, ``ModelTimeout``,
``ToolUnavailable`` …) and status ERROR; an interrupted one ``error.type=Interrupted``.

Message contents (``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.tool.call.arguments``, ``gen_ai.tool.call.result``) are recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true``. W3C ``traceparent`` goes to
HTTP tools, MCP servers and the model server (:func:`headers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agenttask_operator.core import genai
from agenttask_operator.core.conversation import find_tool_call, request_messages
from agenttask_operator.core.errors import Failure
from agenttask_operator.models import AgentTaskSpec, AgentTaskStatus, Entry, Step, TaskState

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from agenttask_operator.core.answers import Reply

log = logging.getLogger(__name__)

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE = "agenttask-operator"


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None
    capture = False


_on = _State()
# The ids the next span started gets (the root span, exported with the ids stored in status).
_forced: ContextVar[tuple[int, int] | None] = ContextVar("agenttask_forced_ids", default=None)
_propagator = TraceContextTextMapPropagator()


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces."""
    if (environ.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    return any((environ.get(name) or "").strip() for name in ENDPOINT_ENVS)


def capture_content(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether message contents go into spans (the GenAI instrumentations' variable)."""
    value = (environ.get(CAPTURE_ENV) or "").strip().lower()
    return value in ("true", "1", "yes", "span_only", "span_and_event")


def setup(environ: Mapping[str, str] = os.environ) -> bool:
    """Start exporting if the environment asks for it (once). Whether traces are on."""
    if _on.tracer is not None or not enabled(environ):
        return _on.tracer is not None
    # Imported here: an operator without an endpoint never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        """Random ids, except for a span started with ids forced (the task's root span)."""

        def generate_span_id(self) -> int:
            forced = _forced.get()
            return forced[1] if forced is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _forced.get()
            return forced[0] if forced is not None else super().generate_trace_id()

    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in (
        environ.get("OTEL_RESOURCE_ATTRIBUTES") or ""
    )
    resource = Resource.create({} if named else {"service.name": SERVICE})
    provider = TracerProvider(resource=resource, id_generator=Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _on.provider, _on.tracer = provider, provider.get_tracer("agenttask_operator")
    _on.capture = capture_content(environ)
    endpoint = next(environ[n] for n in ENDPOINT_ENVS if (environ.get(n) or "").strip())
    log.info(
        "traces: OTLP/HTTP to %s; message contents %s",
        endpoint, "recorded" if _on.capture else "not recorded",
    )  # fmt: skip
    return True


def shutdown() -> None:
    """Export what is left and stop the exporter's thread (blocking: call it in a thread)."""
    provider, _on.provider, _on.tracer = _on.provider, None, None
    if provider is not None:
        provider.shutdown()


def new_context(status: AgentTaskStatus) -> dict[str, Any]:
    """The ``status.traceContext`` to write with the next step intent: new ids for a task that
    has none yet, nothing when it has them or traces are off.
    """  # noqa: D205
    if _on.tracer is None or status.trace_context is not None:
        return {}
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return {"traceContext": {"traceID": f"{trace_id:032x}", "spanID": f"{span_id:016x}"}}


def _root(status: AgentTaskStatus) -> SpanContext | None:
    tc = status.trace_context
    if tc is None:
        return None
    try:
        return SpanContext(
            int(tc.trace_id, 16), int(tc.span_id, 16), False, TraceFlags(TraceFlags.SAMPLED)
        )
    except ValueError:
        return None


def _request_model(spec: AgentTaskSpec, status: AgentTaskStatus) -> str | None:
    resolved = status.resolved_model
    return resolved.name if resolved is not None else spec.model.name


class Attempt:
    """What the runner tells the span of one attempt (nothing, when traces are off)."""

    def __init__(self, span: trace.Span | None = None) -> None:
        """Wrap the attempt's span."""
        self.span = span

    def done(self, entry: Entry) -> None:
        """The attempt produced ``entry`` (about to be stored)."""
        span = self.span
        if span is None:
            return
        if entry.kind == "LLM":
            if entry.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [entry.finish_reason])
            if entry.usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", entry.usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", entry.usage.completion_tokens)
            if _on.capture:
                output = genai.output_messages(entry.message, entry.finish_reason)
                span.set_attribute("gen_ai.output.messages", output)
            return
        if _on.capture:
            content = entry.message.get("content")
            span.set_attribute("gen_ai.tool.call.result", str(content))
        if entry.is_error:
            span.set_attribute("error.type", "ToolError")
            span.set_status(Status(StatusCode.ERROR, "the tool's answer is an error"))


@contextlib.contextmanager
def attempt(state: TaskState, step: Step) -> Iterator[Attempt]:
    """A span for one attempt of ``step`` (``state``: as its intent wrote it), current while
    the attempt runs (so that :func:`headers` propagates it), ended with its outcome.
    """  # noqa: D205
    tracer = _on.tracer
    root = _root(state.status) if tracer is not None else None
    if tracer is None or root is None:
        yield Attempt()
        return
    status, spec = state.status, state.spec
    attrs: dict[str, Any] = {
        "gen_ai.conversation.id": state.uid,
        "gen_ai.provider.name": genai.PROVIDER,
        "agenttask.step.iteration": step.iteration,
        "agenttask.step.attempt": genai.attempt(status, step),
    }
    if step.kind == "LLM":
        model = _request_model(spec, status) or "unknown"
        name, kind = f"chat {model}", SpanKind.CLIENT
        attrs |= {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        attrs |= genai.server(status.model.base_url if status.model else None)
        settings = state.model
        if settings is not None and settings.temperature is not None:
            attrs["gen_ai.request.temperature"] = settings.temperature
        if settings is not None and settings.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = settings.max_tokens
        if _on.capture:
            messages = request_messages(spec, state.transcript)
            attrs["gen_ai.input.messages"] = genai.input_messages(messages)
    else:
        call = find_tool_call(state.transcript, step) or {}
        found = call.get("function")
        fn: dict[str, Any] = found if isinstance(found, dict) else {}
        tool = str(fn.get("name") or step.tool_name or "unknown")
        mcp = (t.name for t in status.resolved_tools or ())
        name, kind = f"execute_tool {tool}", SpanKind.INTERNAL
        attrs |= {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": step.tool_call_id or "",
            "gen_ai.tool.type": genai.tool_type(tool, spec.tools, mcp),
        }
        if _on.capture:
            attrs["gen_ai.tool.call.arguments"] = str(fn.get("arguments") or "{}")
    parent = trace.set_span_in_context(trace.NonRecordingSpan(root))
    span = tracer.start_span(name, context=parent, kind=kind, attributes=attrs)
    try:
        with trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield Attempt(span)
    except BaseException as e:
        failure = getattr(e, "failure", None)  # effects.llm.StepFailed: a failed attempt
        if isinstance(failure, Failure):  # a refused request keeps its status in the cause
            code = getattr(e.__cause__, "status_code", None)
            why = genai.error_type(failure, code if isinstance(code, int) else None)
            message = failure.message
        elif isinstance(e, Exception):
            why, message = type(e).__name__, str(e)
        else:  # cancelled: the task was stopped, deleted or taken by another replica
            why, message = "Interrupted", "interrupted"
        span.set_attribute("error.type", why)
        span.set_status(Status(StatusCode.ERROR, message[:500]))
        raise
    finally:
        span.end()


def reply(answer: Reply) -> None:
    """The model server's answer: what it says of itself goes on the current ``chat`` span."""
    if _on.tracer is None:
        return
    span = trace.get_current_span()
    if answer.model:
        span.set_attribute("gen_ai.response.model", answer.model)
    if answer.id:
        span.set_attribute("gen_ai.response.id", answer.id)


def headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for an outgoing request."""
    if _on.tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def _ns(when: datetime | None) -> int:
    return int((when or datetime.now(UTC)).timestamp() * 1e9)


def finished(obj: Mapping[str, Any]) -> None:
    """The task ``obj`` (as just written) has ended: export its root span, with its ids."""
    if _on.tracer is None:
        return
    status = AgentTaskStatus.model_validate(obj.get("status") or {})
    root = _root(status)
    if root is None:
        return
    meta, spec = obj.get("metadata") or {}, AgentTaskSpec.model_validate(obj.get("spec") or {})
    name = str(meta.get("name", ""))
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": genai.PROVIDER,
        "gen_ai.agent.name": name,
        "gen_ai.conversation.id": str(meta.get("uid", "")),
        "gen_ai.usage.input_tokens": status.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": status.usage.completion_tokens,
        "k8s.namespace.name": str(meta.get("namespace", "")),
        "agenttask.phase": status.phase or "",
        "agenttask.iterations": status.iterations,
        "agenttask.tool_calls": status.tool_calls,
    }
    model = _request_model(spec, status)
    if model:
        attrs["gen_ai.request.model"] = model
    attrs |= genai.server(status.model.base_url if status.model else None)
    if _on.capture and spec.system_prompt:
        attrs["gen_ai.system_instructions"] = genai.instructions(spec.system_prompt)
    token = _forced.set((root.trace_id, root.span_id))
    try:
        span = _on.tracer.start_span(
            f"invoke_agent {name}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root: no parent
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=_ns(status.start_time),
        )
    finally:
        _forced.reset(token)
    if status.phase == "Failed":
        span.set_attribute("error.type", status.reason or "_OTHER")
        span.set_status(Status(StatusCode.ERROR, (status.message or "")[:500]))
    span.end(end_time=_ns(status.completion_time))
