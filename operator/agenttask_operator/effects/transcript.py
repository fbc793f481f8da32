"""The transcript: an append-only JSON-lines log in ConfigMaps owned by the task.

Where: ConfigMaps ``<task>-transcript-0``, ``-1``, … in the task's namespace, labelled
``agenttask.dev/task-uid=<uid>`` and owned by the AgentTask (garbage-collected with it). Each
holds up to :data:`CHUNK_BYTES` of the log under the key ``transcript.jsonl``; the log is their
concatenation, one JSON entry per line. A single entry may span several ConfigMaps, so there is
no limit to the size of a message or of the whole conversation.

Appending a line is the commit point of a step: only complete lines (ending in a newline) count.
A crash half-way through a multi-chunk append leaves an incomplete last line, which is ignored
and overwritten by the next append. Every write carries the chunk's resourceVersion (or is a
create), so two writers can never both append.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agenttask_operator.effects.kube import GROUP, KIND, VERSION, Conflict, Kube
from agenttask_operator.models import Entry, TranscriptInfo

CHUNK_BYTES = 512 * 1024  # well under the 1 MiB ConfigMap limit and etcd's 1.5 MiB request limit
DATA_KEY = "transcript.jsonl"
UID_LABEL = "agenttask.dev/task-uid"
CHUNK_LABEL = "agenttask.dev/transcript-chunk"


def split_utf8(text: str, limit: int) -> list[str]:
    """Split ``text`` greedily into pieces of at most ``limit`` UTF-8 bytes, on character bounds."""
    pieces: list[str] = []
    data = text.encode()
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        if end == start:
            raise ValueError(f"a limit of {limit} bytes cannot hold one character")
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def valid_prefix(stream: str) -> str:
    """The part of the log made of complete lines."""
    cut = stream.rfind("\n")
    return stream[: cut + 1] if cut >= 0 else ""


def parse(stream: str) -> tuple[Entry, ...]:
    """The entries of the complete lines of ``stream``."""
    # Not str.splitlines(): JSON text may hold U+2028, U+2029 or U+0085, which it also splits on.
    lines = valid_prefix(stream).split("\n")
    return tuple(Entry.model_validate_json(line) for line in lines if line)


def chunk_name(task_name: str, uid: str, index: int) -> str:
    """Deterministic ConfigMap name of chunk ``index``."""
    suffix = f"-transcript-{index}"
    if len(task_name) + len(suffix) <= 253:
        return task_name + suffix
    return f"{task_name[: 253 - len(suffix) - 9]}-{uid[:8]}{suffix}"


@dataclass
class _Chunk:
    name: str
    resource_version: str | None  # None: does not exist yet
    text: str


class TranscriptStore:
    """One task's transcript: loaded once, then kept in memory and appended to."""

    def __init__(self, kube: Kube, namespace: str, task_name: str, uid: str) -> None:
        """Bind to a task; call :meth:`load` before use."""
        self.kube, self.namespace, self.task_name, self.uid = kube, namespace, task_name, uid
        self.chunks: list[_Chunk] = []
        self.entries: tuple[Entry, ...] = ()

    @property
    def stream(self) -> str:
        """The whole log as stored."""
        return "".join(c.text for c in self.chunks)

    async def load(self) -> tuple[Entry, ...]:
        """Read every chunk (in order, stopping at a gap) and parse the complete lines."""
        items = await self.kube.list_config_maps(self.namespace, f"{UID_LABEL}={self.uid}")
        by_index: dict[int, Any] = {}
        for cm in items:
            try:
                by_index[int((cm.metadata.labels or {}).get(CHUNK_LABEL, ""))] = cm
            except ValueError:
                continue
        self.chunks = []
        i = 0
        while i in by_index:
            cm = by_index[i]
            self.chunks.append(
                _Chunk(
                    cm.metadata.name,
                    cm.metadata.resource_version,
                    (cm.data or {}).get(DATA_KEY, ""),
                )
            )
            i += 1
        self.entries = parse(self.stream)
        return self.entries

    def info(self) -> TranscriptInfo:
        """What status says about the transcript."""
        prefix = valid_prefix(self.stream)
        used = split_utf8(prefix, CHUNK_BYTES) if prefix else []
        return TranscriptInfo(
            config_maps=tuple(chunk_name(self.task_name, self.uid, i) for i in range(len(used))),
            entries=len(self.entries),
            bytes=len(prefix.encode()),
        )

    def _body(self, index: int, text: str, resource_version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": chunk_name(self.task_name, self.uid, index),
            "namespace": self.namespace,
            "labels": {
                UID_LABEL: self.uid,
                CHUNK_LABEL: str(index),
                "app.kubernetes.io/managed-by": "agenttask-operator",
            },
            "annotations": {"agenttask.dev/task": self.task_name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": self.task_name,
                    "uid": self.uid,
                    "controller": True,
                }
            ],
        }
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {DATA_KEY: text}}

    async def append(self, entry: Entry) -> None:
        """Append ``entry`` as one line. Raises Conflict if someone else wrote meanwhile."""
        line = json.dumps(entry.to_api(), ensure_ascii=False, separators=(",", ":")) + "\n"
        desired = split_utf8(valid_prefix(self.stream) + line, CHUNK_BYTES)
        try:
            for i, text in enumerate(desired):
                existing = self.chunks[i] if i < len(self.chunks) else None
                if existing is not None and existing.text == text:
                    continue
                if existing is None or existing.resource_version is None:
                    rv = await self.kube.create_config_map(
                        self.namespace, self._body(i, text, None)
                    )
                else:
                    body = self._body(i, text, existing.resource_version)
                    rv = await self.kube.replace_config_map(self.namespace, body)
                chunk = _Chunk(chunk_name(self.task_name, self.uid, i), rv, text)
                if existing is None:
                    self.chunks.append(chunk)
                else:
                    self.chunks[i] = chunk
        except Conflict:
            await self.load()
            raise
        self.entries = (*self.entries, entry)
        # Left-overs of an earlier torn append beyond the new end hold no complete line; drop them.
        for extra in self.chunks[len(desired) :]:
            await self.kube.delete_config_map(self.namespace, extra.name)
        del self.chunks[len(desired) :]
