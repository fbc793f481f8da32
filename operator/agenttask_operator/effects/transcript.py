"""The transcript: an append-only JSON-lines log in ConfigMaps owned by the task.

Where: ConfigMaps ``<task>-<uid8>-transcript-0``, ``-1``, … in the task's namespace, where
``<uid8>`` is the first 8 hex digits of the task's uid (see :func:`chunk_name`), labelled
``agenttask.dev/task-uid=<uid>`` and ``agenttask.dev/transcript-chunk=<n>`` and owned by the
AgentTask (garbage-collected with it). Each holds up to :data:`CHUNK_BYTES` of the log under the
key ``transcript.jsonl``; the log is their concatenation, one JSON entry per line. A single entry
may span several ConfigMaps, so there is no limit to the size of a message or of the whole
conversation.

The uid in the name keeps incarnations apart: a task deleted and created again under the same
name gets a new uid, so its chunks never collide with the old ones, which may live on until the
garbage collector removes them. Chunks are found by their labels, never by their names, and an
existing chunk is always rewritten under its stored name; so tasks whose chunks were created
with the earlier naming (``<task>-transcript-<n>``, no uid) carry on, with new chunks named the
new way.

Appending a line is the commit point of a step: only complete lines (ending in a newline) count.
A crash half-way through a multi-chunk append leaves an incomplete last line, which is ignored
and overwritten by the next append. Every write carries the chunk's resourceVersion (or is a
create of a name that is deterministic per task uid and index), so two writers can never both
append.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from agenttask_operator.effects.kube import GROUP, KIND, VERSION, Conflict, Kube
from agenttask_operator.models import Entry, TranscriptInfo

CHUNK_BYTES = 512 * 1024  # well under the 1 MiB ConfigMap limit and etcd's 1.5 MiB request limit
DATA_KEY = "transcript.jsonl"
UID_LABEL = "agenttask.dev/task-uid"
CHUNK_LABEL = "agenttask.dev/transcript-chunk"
UID_TAG_LEN = 8  # hex digits of the uid in chunk names: 32 random bits of a UUIDv4
MAX_NAME = 253  # a ConfigMap name is a DNS subdomain


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


def uid_tag(uid: str) -> str:
    """:data:`UID_TAG_LEN` lowercase letters or digits identifying ``uid``, for names.

    A Kubernetes uid is a random UUID, so its first hex digits serve (and show which task a
    ConfigMap belongs to); anything else that is too short for that is hashed instead.
    """
    tag = re.sub("[^0-9a-z]", "", uid.lower())[:UID_TAG_LEN]
    if len(tag) < UID_TAG_LEN:
        tag = hashlib.sha256(uid.encode()).hexdigest()[:UID_TAG_LEN]
    return tag


def chunk_name(task_name: str, uid: str, index: int) -> str:
    """The ConfigMap name of a new chunk ``index``: ``<task>-<uid tag>-transcript-<index>``.

    Deterministic per (task name, uid, index), so two writers of one task collide on create;
    different per incarnation, so a re-created task never meets the old one's chunks. A task
    name too long for the 253-character limit is cut (and stripped of a trailing ``.`` or ``-``,
    to stay a valid DNS subdomain).
    """
    suffix = f"-{uid_tag(uid)}-transcript-{index}"
    return task_name[: MAX_NAME - len(suffix)].rstrip(".-") + suffix


@dataclass
class _Chunk:
    name: str  # as stored: never recomputed, older chunks may follow an earlier naming
    resource_version: str
    text: str


def _chunk(cm: Any) -> _Chunk:
    """A listed ConfigMap as a chunk."""
    text = (cm.data or {}).get(DATA_KEY, "")
    return _Chunk(cm.metadata.name, cm.metadata.resource_version, text)


class TranscriptStore:
    """One task's transcript: loaded once, then kept in memory and appended to."""

    def __init__(self, kube: Kube, namespace: str, task_name: str, uid: str) -> None:
        """Bind to a task; call :meth:`load` before use."""
        self.kube, self.namespace, self.task_name, self.uid = kube, namespace, task_name, uid
        self.chunks: list[_Chunk] = []
        self.stray: dict[int, _Chunk] = {}  # chunks beyond a gap: rewritten or deleted, not read
        self.entries: tuple[Entry, ...] = ()

    @property
    def stream(self) -> str:
        """The whole log as stored."""
        return "".join(c.text for c in self.chunks)

    async def load(self) -> tuple[Entry, ...]:
        """Read every chunk of this uid (in order, stopping at a gap); parse the complete lines."""
        items = await self.kube.list_config_maps(self.namespace, f"{UID_LABEL}={self.uid}")
        by_index: dict[int, _Chunk] = {}
        for cm in items:
            try:
                index = int((cm.metadata.labels or {}).get(CHUNK_LABEL, ""))
            except ValueError:
                continue
            if index >= 0:
                by_index[index] = _chunk(cm)
        self.chunks = []
        while len(self.chunks) in by_index:
            self.chunks.append(by_index.pop(len(self.chunks)))
        self.stray = by_index
        self.entries = parse(self.stream)
        return self.entries

    def info(self) -> TranscriptInfo:
        """What status says about the transcript: the stored chunks holding complete lines."""
        size = len(valid_prefix(self.stream).encode())
        names: list[str] = []
        covered = 0
        for chunk in self.chunks:
            if covered >= size:
                break
            names.append(chunk.name)
            covered += len(chunk.text.encode())
        return TranscriptInfo(config_maps=tuple(names), entries=len(self.entries), bytes=size)

    def _body(
        self, name: str, index: int, text: str, resource_version: str | None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
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

    async def _write(self, index: int, text: str, existing: _Chunk | None) -> _Chunk:
        """Replace ``existing`` under its stored name, or create chunk ``index`` anew."""
        if existing is None:
            name = chunk_name(self.task_name, self.uid, index)
            rv = await self.kube.create_config_map(
                self.namespace, self._body(name, index, text, None)
            )
        else:
            name = existing.name
            body = self._body(name, index, text, existing.resource_version)
            rv = await self.kube.replace_config_map(self.namespace, body)
        return _Chunk(name, rv, text)

    async def append(self, entry: Entry) -> None:
        """Append ``entry`` as one line. Raises Conflict if someone else wrote meanwhile."""
        line = json.dumps(entry.to_api(), ensure_ascii=False, separators=(",", ":")) + "\n"
        desired = split_utf8(valid_prefix(self.stream) + line, CHUNK_BYTES)
        try:
            for i, text in enumerate(desired):
                if i < len(self.chunks):
                    if self.chunks[i].text != text:
                        self.chunks[i] = await self._write(i, text, self.chunks[i])
                else:  # a chunk left beyond a gap is reused, never doubled under a new name
                    self.chunks.append(await self._write(i, text, self.stray.get(i)))
                    self.stray.pop(i, None)
        except Conflict:
            await self.load()
            raise
        self.entries = (*self.entries, entry)
        # Left-overs of an earlier torn append beyond the new end hold no complete line; drop
        # them, the last first, so that a crash meanwhile leaves no gap.
        extra = dict(enumerate(self.chunks)) | self.stray
        for index in sorted((i for i in extra if i >= len(desired)), reverse=True):
            await self.kube.delete_config_map(self.namespace, extra[index].name)
            self.stray.pop(index, None)
        del self.chunks[len(desired) :]
