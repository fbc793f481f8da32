"""kopf handlers of ``AgentToolServer``: list the MCP server's tools into status, keep it fresh.

One kopf daemon per AgentToolServer (started when it appears, and for each one again when the
operator starts) runs :class:`RefreshLoop`: when ``core.toolserver`` says a refresh is due — at
once after a spec change, every ``refreshSeconds`` while Ready, sooner while failing — it checks
the URL against the operator's allow-list (before any connection), reads the header Secrets,
lists the tools (``effects.mcp``, one short-lived session) and merge-patches ``/status``. In
between it sleeps without polling; any change of the object wakes it (``on.event``).

While the last refresh was Ready, the loop also keeps one listener task on the server
(``effects.mcp.watch_tool_changes``, ``subscriptions/listen`` of protocol 2026-07-28): a
``tools/list_changed`` event wakes the loop with the change "announced", and core.toolserver
makes a refresh due at once. A lost stream is listened to again after a growing delay (1 s … 60
s). Each acknowledged subscription is followed by one refresh: events are not replayed, so a
change made before it would otherwise be missed. A server that cannot announce changes is
not asked again until the spec's generation changes or the operator restarts. The listener
ends with the loop, when the spec changes, and when the server is no longer Ready.

Header values are read from Secrets for each refresh, passed to the MCP client and dropped:
they are never written to status, Events or the log.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core import toolserver as core
from agenttask_operator.core.status import ts
from agenttask_operator.core.urls import host_allowed, redact
from agenttask_operator.effects import logs
from agenttask_operator.effects.kube import GROUP, VERSION
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.handlers.context import Context, sleep
from agenttask_operator.handlers.mcptools import server_headers
from agenttask_operator.models.toolserver import (
    KIND,
    PLURAL,
    AgentToolServerSpec,
    AgentToolServerStatus,
    Discovery,
)

log = logging.getLogger(__name__)
WAKE = "agenttoolserver/"  # wake-up keys apart from AgentTasks' (no object name has a "/")
ERROR_RETRY_SECONDS_MAX = 60.0  # longest wait after an API server error or a bug of ours
LISTEN_RETRY_SECONDS_MAX = 60.0  # longest wait before listening again after a lost stream


def now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def _status(raw: Any) -> AgentToolServerStatus:
    try:
        return AgentToolServerStatus.model_validate(raw or {})
    except ValidationError:
        return AgentToolServerStatus()  # unreadable: rewritten whole by the next refresh


class RefreshLoop:
    """Keeps one AgentToolServer's status in step with its server."""

    def __init__(self, ctx: Context, body: kopf.Body) -> None:
        """Bind to the object; ``body`` is kopf's live view of it (kept up to date)."""
        self.ctx, self.body = ctx, body
        self.namespace = str(body.metadata.namespace)
        self.name = str(body.metadata.name)
        # The status this loop wrote last (the live body shows it only once the watch has).
        self.known = _status(body.get("status"))
        self.failures = 0
        self.announced = False  # the server said its tools changed since the last refresh
        self.listener: asyncio.Task[None] | None = None
        self.listening_to: int | None = None  # the generation the listener was started for
        self.unsupported: int | None = None  # a generation whose server cannot announce changes
        self.supported: bool | None = None  # what was logged last about change notifications

    @property
    def wake(self) -> asyncio.Event:
        """Set whenever the object changes."""
        return self.ctx.wakeup(self.namespace, WAKE + self.name)

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Refresh when due, sleep until the next time or a change, until stopped."""
        try:
            while not stopped:
                self.wake.clear()
                if not self.ctx.assigned_here(str(self.body.metadata.uid)):
                    # Another replica refreshes it; woken when the replicas change.
                    await self._stop_listener()
                    await sleep(stopped, self.wake, None)
                    continue
                try:
                    self._keep_listener()  # a spec change ends the old listener at once
                    delay = self.due_in()
                    if delay <= 0:
                        self.announced = False  # this refresh sees whatever was announced
                        if not await self.refresh():
                            return  # the object is gone
                        delay = self.due_in()
                    self._keep_listener()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the API server, or a bug of ours: keep status, retry
                    self.failures += 1
                    delay = core.retry_delay(self.failures, ERROR_RETRY_SECONDS_MAX)
                    log.warning(
                        "AgentToolServer %s/%s: refresh failed: %s: %s; again in %gs",
                        self.namespace, self.name, type(e).__name__, e, delay,
                    )  # fmt: skip
                await sleep(stopped, self.wake, delay)
        finally:
            await self._stop_listener()

    def _keep_listener(self) -> None:
        """Listen to the server while it is Ready for the current spec; stop otherwise."""
        generation = self.body.metadata.get("generation")
        spec, _ = self._spec()
        cond = self.known.condition()
        ready = (
            spec is not None
            and cond is not None
            and cond.status == "True"
            and self.known.observed_generation == generation
        )
        if self.listener is not None and (
            not ready or self.listening_to != generation or self.listener.done()
        ):
            self.listener.cancel()  # its end is awaited when the loop stops
            self.listener = None
        if not ready or spec is None or self.listener is not None:
            return
        if generation is not None and self.unsupported == generation:
            return
        self.listening_to = generation
        self.listener = asyncio.create_task(
            self._listen(spec, generation), name=f"listen {self.namespace}/{self.name}"
        )

    async def _stop_listener(self) -> None:
        task, self.listener = self.listener, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)

    def _announce(self) -> None:
        """A change notification: the loop wakes and refreshes at once."""
        self.announced = True
        self.wake.set()

    async def _listen(self, spec: AgentToolServerSpec, generation: int | None) -> None:
        """Listen for tool changes until cancelled or the server cannot announce them."""
        where = f"AgentToolServer {self.namespace}/{self.name}"
        tries = 0

        def listening(protocol: str | None) -> None:
            nonlocal tries
            tries = 0
            self._announce()  # a change since the last refresh is not replayed: refresh once
            if self.supported is not True:
                self.supported = True
                log.info("%s: the server announces tool changes (protocol %s)", where, protocol)

        from agenttask_operator.effects import mcp  # here, not at start: see context.MCP_IMPORT

        while True:
            tries += 1
            try:
                headers = await server_headers(self.ctx.kube, self.namespace, spec)
                if isinstance(headers, core.Problem):
                    detail = headers.message  # the refresh loop reports it
                else:
                    await mcp.watch_tool_changes(
                        spec.url, headers, spec.timeout_seconds, self._announce, listening
                    )
                    detail = "the server closed the stream"
            except mcp.ChangesNotSupported as e:
                self.unsupported = generation
                if self.supported is not False:
                    self.supported = False
                    log.info(
                        "%s: the server does not announce tool changes (%s); "
                        "refreshing every %gs only",
                        where, e, spec.refresh_seconds,
                    )  # fmt: skip
                return
            except StepFailed as e:
                detail = e.failure.message
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API server (reading a Secret), or a bug of ours
                detail = f"{type(e).__name__}: {e}"
            delay = core.retry_delay(tries, LISTEN_RETRY_SECONDS_MAX)
            log.debug("%s: not listening for tool changes: %s; again in %gs", where, detail, delay)
            await asyncio.sleep(delay)

    def _spec(self) -> tuple[AgentToolServerSpec | None, str]:
        try:
            return AgentToolServerSpec.model_validate(self.body.get("spec") or {}), ""
        except ValidationError as e:  # the CRD schema prevents this
            return None, f"spec could not be read: {e.error_count()} errors"

    def due_in(self) -> float:
        """Seconds until the next refresh (0: now)."""
        spec, _ = self._spec()
        refresh = spec.refresh_seconds if spec else core.MAX_RETRY_SECONDS
        allowed = spec is None or host_allowed(spec.url, self.ctx.settings.allowed_hosts)
        generation = self.body.metadata.get("generation")
        return core.seconds_until_refresh(
            self.known, generation, refresh, self.failures, allowed, now(), self.announced
        )

    async def refresh(self) -> bool:
        """One refresh: check, read Secrets, discover, write status (and an Event on change).

        False when the object is gone.
        """
        generation = self.body.metadata.get("generation")
        spec, error = self._spec()
        found: Discovery | None = None
        problem: core.Problem | None = None
        if spec is None:
            problem = core.Problem("InvalidSpec", error)
        elif not host_allowed(spec.url, self.ctx.settings.allowed_hosts):
            problem = core.Problem(
                core.URL_NOT_ALLOWED,
                f"spec.url {redact(spec.url)} is not on the operator's allowed hosts "
                f"({', '.join(self.ctx.settings.allowed_hosts)}); no connection was made",
            )
        else:
            found, problem = await self._discover(spec)
        at = now()
        if found is not None and spec is not None:
            patch = core.discovered_patch(self.known, generation, found, spec.tool_filter, at)
        else:
            assert problem is not None
            patch = core.failed_patch(self.known, generation, problem, at)
        written = await self.ctx.kube.patch_custom_status(PLURAL, self.namespace, self.name, patch)
        if written is None:  # deleted meanwhile: the daemon is being stopped
            return False
        before, self.known = self.known, _status(written.get("status"))
        ready = self.known.condition()
        self.failures = 0 if ready is not None and ready.status == "True" else self.failures + 1
        await self._report(before, at)
        return True

    async def _discover(
        self, spec: AgentToolServerSpec
    ) -> tuple[Discovery | None, core.Problem | None]:
        headers = await server_headers(self.ctx.kube, self.namespace, spec)
        if isinstance(headers, core.Problem):
            return None, headers
        from agenttask_operator.effects import mcp  # here, not at start: see context.MCP_IMPORT

        try:
            return await mcp.list_tools(spec.url, headers, spec.timeout_seconds), None
        except StepFailed as e:
            reason = "ServerUnavailable" if e.failure.transient else "ServerRefused"
            return None, core.Problem(reason, e.failure.message)

    async def _report(self, before: AgentToolServerStatus, at: datetime) -> None:
        """Log and record an Event when readiness changed, or the tools did."""
        old, new = before.condition(), self.known.condition()
        if new is None:
            return
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.body.metadata.uid}
        obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}
        if old is None or (old.status, old.reason) != (new.status, new.reason):
            log.info(
                "AgentToolServer %s/%s: Ready=%s (%s): %s",
                self.namespace, self.name, new.status, new.reason, new.message,
            )  # fmt: skip
            kind = "Normal" if new.status == "True" else "Warning"
            await self.ctx.kube.object_event(obj, kind, new.reason, new.message, ts(at))
        elif new.status == "True" and (
            change := core.tools_changed(before.tools, self.known.tools)
        ):
            log.info("AgentToolServer %s/%s: tools changed: %s", self.namespace, self.name, change)
            await self.ctx.kube.object_event(obj, "Normal", "ToolsChanged", change, ts(at))


async def wake(namespace: str | None, name: str | None, memo: Any, **_: Any) -> None:
    """Any change of an AgentToolServer ends its loop's sleep (a spec edit is acted on at once)."""
    ctx: Context | None = memo.get("ctx")
    if ctx is not None and namespace and name:
        ctx.wakeup(namespace, WAKE + name).set()


async def refresh_loop(
    *, body: kopf.Body, stopped: kopf.DaemonStopped, memo: Any, **_: Any
) -> None:
    """The daemon of one AgentToolServer."""
    with logs.about_object("AgentToolServer", body):
        await RefreshLoop(memo.ctx, body).run(stopped)


def register() -> None:
    """Register the AgentToolServer handlers with kopf's default registry."""
    kopf.on.event(GROUP, VERSION, PLURAL, id="agenttoolserver-wake")(wake)
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="agenttoolserver-refresh",
        cancellation_timeout=5.0,
        backoff=5.0,
    )(refresh_loop)
