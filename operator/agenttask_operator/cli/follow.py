"""``kubectl agenttask logs -f``: the transcript as it grows, until the task ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from agenttask_operator.cli import logview, render
from agenttask_operator.cli.client import CliError, Mirror, Reader, from_server
from agenttask_operator.cli.output import Io, dump, now, raw_entries
from agenttask_operator.effects.kube import GROUP, PLURAL, VERSION
from agenttask_operator.effects.transcript import UID_LABEL
from agenttask_operator.models import Entry


def forbidden(error: BaseException | None) -> bool:
    """Whether ``error`` is the API server's 403."""
    return isinstance(error, ApiException) and error.status == 403


class Follower:
    """``logs -f``: print the transcript so far, then each step and Event as it comes, until
    the task ends (or is deleted). Three watches — the task, its transcript ConfigMaps, its
    Events — wake one loop that prints what is new.
    """  # noqa: D205

    def __init__(
        self,
        reader: Reader,
        io: Io,
        task: dict[str, Any],
        limit: int | None,
        output: str | None,
    ) -> None:
        """Follow ``task``."""
        self.reader, self.io, self.task, self.limit, self.output = reader, io, task, limit, output
        meta = task["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        core, custom = reader.core, reader.custom
        self.tasks = Mirror(
            custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
            field_selector=f"metadata.name={name}",
        )  # fmt: skip
        self.cms = Mirror(core.list_namespaced_config_map, ns, label_selector=f"{UID_LABEL}={uid}")
        self.events = Mirror(
            core.list_namespaced_event, ns,
            field_selector=f"involvedObject.name={name},involvedObject.kind=AgentTask",
        )  # fmt: skip
        self.printed_entries = 0
        self.printed_events: set[str] = set()
        self.started = False

    def _emit(self, lines: list[str]) -> None:
        if lines:
            self.io.print("\n".join(lines) + "\n")

    def _raw(self, entries: tuple[Entry, ...]) -> None:
        assert self.output is not None
        for row in raw_entries(entries, self.printed_entries + 1):
            if self.output == "json":
                self.io.print(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                self.io.print("---\n" + dump(row, "yaml"))

    async def _show(self) -> bool:
        """Print what is new; True once the task has ended or is gone."""
        uid = self.task["metadata"]["uid"]
        current = next(iter(self.tasks.objects.values()), None)
        if current is None or current["metadata"]["uid"] != uid:
            name = self.task["metadata"]["name"]
            raise CliError(f"error: agenttask {name} was deleted while following its logs")
        self.task = current
        entries = await self.reader.transcript(current, list(self.cms.objects.values()))
        status = current.get("status") or {}
        committed = (status.get("transcript") or {}).get("entries", 0)
        done = status.get("phase") in render.TERMINAL and len(entries) >= committed
        new = entries[self.printed_entries :]
        if self.output in ("json", "yaml"):
            self._raw(new)
        elif not self.started:  # what is there already, in order, as ``logs`` prints it
            fresh = self._fresh_events(final=done)
            lines = logview.transcript_lines(
                current, entries, fresh, now(), limit=self.limit, end=done
            )
            self._emit(lines)
            self.started = True
        else:
            names = render.tool_names(entries)
            lines = []
            for n, e in enumerate(new, start=self.printed_entries + 1):
                lines.extend(logview.entry_lines(n, e, names, self.limit))
            fresh = self._fresh_events(final=done)
            self._emit(lines + [logview.event_line(ev) for ev in fresh])
            if done:
                self._emit(logview.epilogue(status, now()))
        self.printed_entries = len(entries)
        return done

    def _fresh_events(self, *, final: bool) -> list[logview.TaskEvent]:
        """Events not printed yet, oldest first; the task's end only once it has ended (and
        its last steps are printed).
        """  # noqa: D205
        status = self.task.get("status") or {}
        end = {status.get("phase"), status.get("reason")}
        uid = self.task["metadata"]["uid"]
        fresh = []
        for key, obj in self.events.objects.items():
            if key in self.printed_events or (obj.get("involvedObject") or {}).get("uid") != uid:
                continue
            ev = logview.TaskEvent.of(obj)
            ended = status.get("phase") in render.TERMINAL
            if ev is None or (ended and ev.reason in end and not final):
                continue
            self.printed_events.add(key)
            fresh.append(ev)
        return sorted(fresh, key=lambda v: v.time)

    async def run(self) -> None:
        """Follow until the task ends; an API failure of a watch ends it with an error."""
        mirrors = (self.tasks, self.cms, self.events)
        runs = [asyncio.create_task(m.run()) for m in mirrors]
        try:
            # The first lists, before anything is printed.
            for m in mirrors:
                await m.changed.wait()
            while True:
                for m in mirrors:
                    if m is self.events and forbidden(m.error):
                        m.error = None  # Events are extra, as in ``logs``: go on without them
                    if m.error is not None:
                        if isinstance(m.error, ApiException):
                            raise from_server(m.error)
                        raise m.error
                    m.changed.clear()
                if await self._show():
                    return
                waits = [asyncio.create_task(m.changed.wait()) for m in mirrors]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                await asyncio.sleep(0.05)  # let a burst of changes (a long entry's parts) land
        finally:
            for r in runs:
                r.cancel()
            for r in runs:
                with contextlib.suppress(asyncio.CancelledError):
                    await r
