"""The operator's log lines: plain text for a terminal, or one JSON object a line for a pipeline.

Which task (and which step of it, at which attempt) a line is about is not passed to each log
call: the task's loop sets it in context variables (:func:`about`, :func:`at_step`) and the
formatters read them, so every line logged while the loop runs — ours, the openai SDK's, the
MCP SDK's — carries it. kopf's own per-object lines (logger ``kopf.objects``) carry the object
in the record (``k8s_ref``); that wins where both are present.

JSON fields: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``; about an object:
``kind``, ``namespace``, ``name``, ``uid``; about a step: ``step`` (``LLM 2``, ``Tool 2
call_abc``), ``tool``, ``attempt``; ``exception`` with the traceback when there is one.

Debug logging of ``kubernetes_asyncio``'s REST client prints every response body, Secrets
included: :func:`configure` keeps that logger at INFO whatever the level.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from agenttask_operator.models import Step

LogFormat = Literal["plain", "json"]
FORMATS: tuple[LogFormat, ...] = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose debug output may hold secrets: kept at INFO even with --verbose.
NEVER_DEBUG = ("kubernetes_asyncio.client.rest",)


@dataclass(frozen=True)
class Subject:
    """The object a line is about."""

    kind: str
    namespace: str | None
    name: str
    uid: str | None


@dataclass(frozen=True)
class StepRef:
    """The step in flight a line is about."""

    step: str
    attempt: int
    tool: str | None = None


_subject: ContextVar[Subject | None] = ContextVar("agenttask_log_subject", default=None)
_step: ContextVar[StepRef | None] = ContextVar("agenttask_log_step", default=None)


@contextmanager
def about(kind: str, namespace: str | None, name: str, uid: str | None) -> Iterator[None]:
    """Lines logged inside (and in asyncio tasks started inside) are about this object."""
    token = _subject.set(Subject(kind, namespace, name, uid))
    try:
        yield
    finally:
        _subject.reset(token)


def about_object(kind: str, body: Mapping[str, Any]) -> AbstractContextManager[None]:
    """:func:`about` the object ``body`` (as kopf hands it to a handler)."""
    meta = body.get("metadata") or {}
    return about(kind, meta.get("namespace"), str(meta.get("name")), meta.get("uid"))


def step_name(step: Step) -> str:
    """``LLM 2`` or ``Tool 2 call_abc``: short, stable, and the same as in ``status.currentStep``
    terms (kind, iteration, tool call id).
    """  # noqa: D205
    if step.kind == "LLM":
        return f"LLM {step.iteration}"
    return f"Tool {step.iteration} {step.tool_call_id}"


def at_step(step: Step | None, attempt: int = 1) -> None:
    """From now on in this asyncio task (and those it starts), lines are about ``step`` at
    ``attempt``; None: about no step. A task's loop calls it as a step starts and ends.
    """  # noqa: D205
    _step.set(None if step is None else StepRef(step_name(step), attempt, step.tool_name))


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the record is about: from kopf's ``k8s_ref``, else from the context."""
    out: dict[str, Any] = {}
    subject = _subject.get()
    if subject is not None:
        out |= {"kind": subject.kind, "namespace": subject.namespace, "name": subject.name}
        out["uid"] = subject.uid
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        same = subject is not None and ref.get("uid") == subject.uid
        out = out if same else {}
        for key in ("kind", "namespace", "name", "uid"):
            if ref.get(key):
                out[key] = ref[key]
    step = _step.get()
    if step is not None and subject is not None and out.get("uid") == subject.uid:
        out["step"], out["attempt"] = step.step, step.attempt
        if step.tool:
            out["tool"] = step.tool
    return {k: v for k, v in out.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= fields(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger: message``; kopf's lines about an object get its ``namespace/name``
    in front, as the operator's own lines have it.
    """  # noqa: D205

    def __init__(self) -> None:
        """The plain layout."""
        super().__init__(PLAIN)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Prefix kopf's per-object lines with the object."""
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
            if not record.message.startswith(f"{where}:"):
                record = logging.makeLogRecord(record.__dict__)
                record.message = f"{where}: {record.message}"
        return super().formatMessage(record)


class Levels(logging.Filter):
    """Levels that mean something: kopf logs every failed attempt of a request it retries
    (a watch during an API server restart, a 429) at ERROR; such a line is a WARNING — ERROR is
    kept for what needs a person: a bug of ours, a request given up.
    """  # noqa: D205

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower kopf's retried-request lines to WARNING; never drops a record."""
        if (
            record.levelno == logging.ERROR
            and record.name.startswith("kopf._cogs.clients")
            and "failed; will retry" in str(record.msg)
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of ``fmt``."""
    return JsonFormatter() if fmt == "json" else PlainFormatter()


def configure(fmt: LogFormat = "plain", *, verbose: bool = False) -> None:
    """Log to stderr in ``fmt`` at INFO (DEBUG when ``verbose``), replacing earlier handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(Levels())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NEVER_DEBUG:
        logging.getLogger(name).setLevel(logging.INFO)
