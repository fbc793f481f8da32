"""kopf handlers of ``AgentModel``: keep its ``Ready`` condition in step with its Secret.

Readiness is checked when an AgentModel is created, when its spec changes, when the operator
starts (resume), and by a timer every ``AGENTTASK_AGENTMODEL_RECHECK_SECONDS`` (default 60) once
the object has been quiet that long — so a Secret created or fixed later turns the AgentModel
Ready without anyone touching it. A check is one ``GET`` of the Secret (nothing is sent to the
model); status is merge-patched to ``/status`` only when the condition changes, so a thousand
steady AgentModels cost a thousand reads a minute and no write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core.agentmodel import Readiness, readiness, status_patch
from agenttask_operator.effects.kube import GROUP, VERSION
from agenttask_operator.handlers.context import Context
from agenttask_operator.models.agentmodel import PLURAL, AgentModelSpec, AgentModelStatus

RECHECK_ENV = "AGENTTASK_AGENTMODEL_RECHECK_SECONDS"
DEFAULT_RECHECK_SECONDS = 60.0

log = logging.getLogger(__name__)


def recheck_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """The timer's interval: ``AGENTTASK_AGENTMODEL_RECHECK_SECONDS``, default 60."""
    raw = environ.get(RECHECK_ENV, "").strip()
    if not raw:
        return DEFAULT_RECHECK_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 86_400:  # NaN fails too
        raise ValueError(f"{RECHECK_ENV}={raw!r}: must be a number of seconds in (0, 86400]")
    return seconds


async def check(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    patch: kopf.Patch,
    memo: Any,
    param: Any = None,
    **_: Any,
) -> None:
    """Read the Secret (if any), decide readiness, patch status if it changed.

    ``param`` is the re-check interval: after a failed read, the next try comes that much later.
    """
    assert namespace is not None  # AgentModel is namespaced
    ctx: Context = memo.ctx
    try:
        current = AgentModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        current = AgentModelStatus()  # unreadable: rewritten whole
    try:
        spec = AgentModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:  # the CRD schema prevents this
        ready = Readiness(False, "InvalidSpec", f"spec could not be read: {e.error_count()} errors")
    else:
        ref = spec.api_key_secret_ref
        lookup = None
        if ref is not None:
            try:
                lookup = await ctx.kube.secret_lookup(namespace, ref.name, ref.key)
            except Exception as e:  # 429, 5xx, a connection error …: keep the condition
                code = getattr(e, "status", None)  # an ApiException's HTTP status
                what = f"HTTP {code}" if code else type(e).__name__
                raise kopf.TemporaryError(
                    f"could not read Secret {namespace}/{ref.name}: {what}",
                    delay=param or DEFAULT_RECHECK_SECONDS,
                ) from None
        ready = readiness(namespace, spec, lookup)
    generation = body.get("metadata", {}).get("generation")
    changes = status_patch(current, generation, ready, datetime.now(UTC))
    if changes is None:
        return
    log.info(
        "AgentModel %s/%s: Ready=%s (%s): %s",
        namespace, name, ready.ready, ready.reason, ready.message,
    )  # fmt: skip
    patch.status.update(changes)


async def remember(
    *, event: kopf.RawEvent, namespace: str | None, name: str | None, memo: Any, **_: Any
) -> None:
    """Keep every AgentModel's ``maxRequestsPerMinute`` at hand: LLM requests are paced by it
    without reading the AgentModel per request.
    """  # noqa: D205
    ctx: Context | None = memo.get("ctx")
    if ctx is None or namespace is None or name is None:
        return
    spec = (event.get("object") or {}).get("spec") or {}
    rpm = spec.get("maxRequestsPerMinute")
    if event.get("type") == "DELETED" or not isinstance(rpm, int) or rpm < 1:
        ctx.model_rpm.pop((namespace, name), None)
    else:
        ctx.model_rpm[(namespace, name)] = rpm


def assigned_here(*, uid: str | None, memo: Any, **_: Any) -> bool:
    """Whether this replica checks this AgentModel (another one does, when there are several)."""
    ctx: Context | None = memo.get("ctx")
    return ctx is None or uid is None or ctx.assigned_here(uid)


def register(interval: float | None = None) -> None:
    """Register the AgentModel handlers with kopf's default registry."""
    seconds = interval if interval is not None else recheck_seconds()
    kopf.on.event(GROUP, VERSION, PLURAL, id="agentmodel-limits")(remember)
    for on, id_ in (
        (kopf.on.create, "agentmodel-create"),
        (kopf.on.resume, "agentmodel-resume"),
    ):
        on(GROUP, VERSION, PLURAL, id=id_, param=seconds, when=assigned_here)(check)
    kopf.on.update(
        GROUP, VERSION, PLURAL, id="agentmodel-update", field="spec", param=seconds,
        when=assigned_here,
    )(check)  # fmt: skip
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="agentmodel-recheck",
        interval=seconds,
        idle=seconds,  # only once the object has been quiet that long: no work after a change
        backoff=seconds,
        param=seconds,
        when=assigned_here,
    )(check)
    log.info("AgentModel readiness is re-checked every %gs (%s)", seconds, RECHECK_ENV)
