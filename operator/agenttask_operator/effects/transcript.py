"""The transcript: an append-only log of immutable ConfigMaps owned by the task.

**Segments** (this layout): every committed step adds ConfigMaps
``<task>-<uid8>-transcript-s000000``, ``-s000001``, … in the task's namespace and never
touches them again. ``<uid8>`` is the first 8 hex digits of the task's uid (see
:func:`uid_tag`); each is labelled ``agenttask.dev/task-uid=<uid>`` and
``agenttask.dev/transcript-segment=<n>``, created ``immutable: true`` and owned by the AgentTask
(garbage-collected with it). A segment holds one entry as one JSON line under the key
``transcript.jsonl``; an entry longer than :data:`SEGMENT_BYTES` spans several consecutive
segments, annotated ``agenttask.dev/transcript-part: <i>/<n>``. So a step writes its own
content once and nothing else: the bytes a step writes do not grow with the transcript, and
there is no limit to the size of an entry or of the whole conversation.

**Commit point**: an entry counts once its last part is stored. Creating a segment claims its
index (its name is deterministic per task uid and index, so a second writer's create of the same
index fails with 409); a crash between the parts of a long entry leaves a run of parts that
never completes, which readers skip and later appends step over (a torn write is never
mistaken for a committed step, and nothing is rewritten or deleted to repair it).

**Loss**: segments are created in index order and never deleted by the operator, so an index
missing below the highest one stored means someone deleted a segment; status records how many
entries and segments were committed, so a shorter transcript is detected too
(:mod:`agenttask_operator.core.transcript` decides what that means for the task).

**Chunks** (the earlier layout, read only): ConfigMaps labelled
``agenttask.dev/transcript-chunk=<n>`` whose ``transcript.jsonl`` values, concatenated in
order, form a JSON-lines log (complete lines only). Tasks started by an earlier version keep
their chunks, which come first; their new entries go to segments.

The uid in the names keeps incarnations apart: a task deleted and created again under the same
name gets a new uid, so its ConfigMaps never collide with the old ones, which may live on until
the garbage collector removes them. ConfigMaps are found by their labels, never by their names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from agenttask_operator.effects import metrics
from agenttask_operator.effects.kube import GROUP, KIND, VERSION, Conflict, Kube
from agenttask_operator.models import Entry, StoredTranscript, TranscriptInfo

log = logging.getLogger(__name__)

SEGMENT_BYTES = 512 * 1024  # well under the 1 MiB ConfigMap limit and etcd's 1.5 MiB requests
DATA_KEY = "transcript.jsonl"
UID_LABEL = "agenttask.dev/task-uid"
SEGMENT_LABEL = "agenttask.dev/transcript-segment"
PART_ANNOTATION = "agenttask.dev/transcript-part"
CHUNK_LABEL = "agenttask.dev/transcript-chunk"  # the earlier layout: read, never written
UID_TAG_LEN = 8  # hex digits of the uid in names: 32 random bits of a UUIDv4
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


def line_of(entry: Entry) -> str:
    """``entry`` as stored: one line of compact JSON."""
    return json.dumps(entry.to_api(), ensure_ascii=False, separators=(",", ":")) + "\n"


def uid_tag(uid: str) -> str:
    """:data:`UID_TAG_LEN` lowercase letters or digits identifying ``uid``, for names.

    A Kubernetes uid is a random UUID, so its first hex digits serve (and show which task a
    ConfigMap belongs to); anything else that is too short for that is hashed instead.
    """
    tag = re.sub("[^0-9a-z]", "", uid.lower())[:UID_TAG_LEN]
    if len(tag) < UID_TAG_LEN:
        tag = hashlib.sha256(uid.encode()).hexdigest()[:UID_TAG_LEN]
    return tag


def _name(task_name: str, suffix: str) -> str:
    # A task name too long for the 253-character limit is cut (and stripped of a trailing
    # ``.`` or ``-``, to stay a valid DNS subdomain).
    return task_name[: MAX_NAME - len(suffix)].rstrip(".-") + suffix


def segment_name(task_name: str, uid: str, index: int) -> str:
    """The ConfigMap name of segment ``index``: ``<task>-<uid tag>-transcript-s<index:06d>``.

    Deterministic per (task name, uid, index), so two writers of one task collide on create;
    different per incarnation, so a re-created task never meets the old one's segments. The
    padding makes ``kubectl get cm`` list them in order, after the earlier layout's chunks.
    """
    return _name(task_name, f"-{uid_tag(uid)}-transcript-s{index:06d}")


def chunk_name(task_name: str, uid: str, index: int) -> str:
    """The name an earlier version gave chunk ``index``: ``<task>-<uid tag>-transcript-<n>``."""
    return _name(task_name, f"-{uid_tag(uid)}-transcript-{index}")


def part_of(annotations: dict[str, str] | None) -> tuple[int, int] | None:
    """``(i, n)`` of a segment's ``i/n`` part annotation; None if absent or malformed."""
    i, sep, n = (annotations or {}).get(PART_ANNOTATION, "1/1").partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 1 <= int(i) <= int(n):
        return None
    return int(i), int(n)


def _index(labels: dict[str, str] | None, label: str) -> int | None:
    value = (labels or {}).get(label, "")
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class _Segment:
    part: tuple[int, int] | None
    text: str


def read_segments(segments: dict[int, _Segment]) -> tuple[list[tuple[Entry, int]], int]:
    """The complete entries of ``segments`` in index order, each with its line's size in bytes,
    and the segments they take (a torn run of parts is skipped). Stops at the first missing index.
    """  # noqa: D205
    out: list[tuple[Entry, int]] = []
    run: list[str] = []  # the parts of the entry being read
    index = 0
    while index in segments:
        seg = segments[index]
        index += 1
        if seg.part is None:
            run = []
            continue
        i, n = seg.part
        if i == 1:
            run = [seg.text]
        elif len(run) == i - 1:
            run.append(seg.text)
        else:  # not the part that comes next: a torn run; wait for an entry's first part
            run = []
            continue
        if i == n:
            line = "".join(run)
            run = []
            out.append((Entry.model_validate_json(line), len(line.encode())))
    return out, index


class TranscriptStore:
    """One task's transcript: loaded once, then kept in memory and appended to."""

    def __init__(self, kube: Kube, namespace: str, task_name: str, uid: str) -> None:
        """Bind to a task; call :meth:`load` before use."""
        self.kube, self.namespace, self.task_name, self.uid = kube, namespace, task_name, uid
        self.entries: tuple[Entry, ...] = ()
        self.chunks: tuple[str, ...] = ()  # the earlier layout's chunks holding complete lines
        self.next_segment = 0  # the index the next segment takes
        self.missing: tuple[int, ...] = ()  # segment indices absent below the highest stored
        self.bytes = 0
        self.lock = asyncio.Lock()  # calls run at once append one after the other

    async def load(self, items: list[dict[str, Any]] | None = None) -> tuple[Entry, ...]:
        """Read every ConfigMap of this uid (``items``: already listed, see :class:`Loader`);
        keep the complete entries (chunks, then segments).
        """  # noqa: D205
        if items is None:
            found = self.kube.list_config_maps(self.namespace, f"{UID_LABEL}={self.uid}")
            items = [cm async for cm in found]
        chunks: dict[int, tuple[str, str]] = {}
        segments: dict[int, _Segment] = {}
        for cm in items:
            meta = cm.get("metadata") or {}
            labels, text = meta.get("labels"), (cm.get("data") or {}).get(DATA_KEY, "")
            if (labels or {}).get(UID_LABEL) != self.uid:
                continue
            seg = _index(labels, SEGMENT_LABEL)
            if seg is not None:
                segments[seg] = _Segment(part_of(meta.get("annotations")), text)
                continue
            chunk = _index(labels, CHUNK_LABEL)
            if chunk is not None:
                chunks[chunk] = (str(meta.get("name")), text)
        # The earlier layout: chunks in order up to a gap, complete lines only.
        names: list[str] = []
        texts: list[str] = []
        while len(texts) in chunks:
            name, text = chunks[len(texts)]
            names.append(name)
            texts.append(text)
        stream = valid_prefix("".join(texts))
        size = len(stream.encode())
        covered, used = 0, 0
        while used < len(texts) and covered < size:
            covered += len(texts[used].encode())
            used += 1
        self.chunks = tuple(names[:used])
        entries = list(parse(stream))
        read, contiguous = read_segments(segments)
        entries.extend(e for e, _ in read)
        self.entries = tuple(entries)
        self.bytes = size + sum(n for _, n in read)
        top = max(segments, default=-1)
        self.next_segment = top + 1
        self.missing = tuple(i for i in range(contiguous, top) if i not in segments)
        return self.entries

    def found(self) -> StoredTranscript:
        """What is stored, as loaded: for telling a lost transcript from a short one."""
        return StoredTranscript(
            entries=len(self.entries),
            segments=self.next_segment,
            config_maps=self.chunks,
            missing_segments=self.missing,
        )

    def info(self) -> TranscriptInfo:
        """What status says about the transcript: how many entries, bytes and segments."""
        return TranscriptInfo(
            config_maps=self.chunks,
            entries=len(self.entries),
            bytes=self.bytes,
            segments=self.next_segment,
        )

    def _body(self, index: int, text: str, part: str) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": segment_name(self.task_name, self.uid, index),
            "namespace": self.namespace,
            "labels": {
                UID_LABEL: self.uid,
                SEGMENT_LABEL: str(index),
                "app.kubernetes.io/managed-by": "agenttask-operator",
            },
            "annotations": {"agenttask.dev/task": self.task_name, PART_ANNOTATION: part},
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
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "immutable": True,
            "data": {DATA_KEY: text},
        }

    async def append(self, entry: Entry) -> None:
        """Append ``entry``: one new segment per :data:`SEGMENT_BYTES` of its line, in order.

        Raises Conflict (after reloading) if another writer took one of the indices meanwhile.
        """
        async with self.lock:
            await self._append(entry)

    async def _append(self, entry: Entry) -> None:
        line = line_of(entry)
        pieces = split_utf8(line, SEGMENT_BYTES)
        try:
            for i, piece in enumerate(pieces, start=1):
                body = self._body(self.next_segment, piece, f"{i}/{len(pieces)}")
                await self.kube.create_config_map(self.namespace, body)
                metrics.transcript_segment(piece)
                self.next_segment += 1
        except Conflict:
            await self.load()
            raise
        self.entries = (*self.entries, entry)
        self.bytes += len(line.encode())


@dataclass
class _Batch:
    wanted: set[str] = field(default_factory=set)
    started: bool = False
    result: asyncio.Future[dict[str, list[dict[str, Any]]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Loader:
    """Loads the transcripts of the tasks whose loops start together with one LIST.

    After a restart, every unfinished task's loop starts at once and needs its transcript: a
    LIST per task costs the API server a scan of the namespace's ConfigMaps each (measured:
    6.6 ms of API server CPU per LIST with 3,000 ConfigMaps; 110 ms for one paginated LIST of
    them all). So the loops of a namespace that ask while others keep asking (up to
    :data:`MAX_WAIT` seconds) share one paginated LIST of the namespace's transcript
    ConfigMaps; only the ConfigMaps of the tasks that asked are kept (finished tasks'
    transcripts are read past, never held). A loop that asks alone lists its own ConfigMaps.
    """

    WINDOW = 0.25  # seconds without a new loop joining before the LIST starts
    MAX_WAIT = 3.0  # seconds the first loop waits at most
    ALONE = 4  # fewer loops than this list their own ConfigMaps each

    def __init__(self, kube: Kube) -> None:
        """Share ``kube``."""
        self.kube = kube
        self.batches: dict[str, _Batch] = {}

    async def items(self, namespace: str, uid: str) -> list[dict[str, Any]] | None:
        """The ConfigMaps of ``uid``, listed with those of other loops; None: list your own."""
        batch = self.batches.get(namespace)
        if batch is None or batch.started:
            batch = self.batches[namespace] = _Batch()
            asyncio.get_running_loop().create_task(self._run(namespace, batch))
        batch.wanted.add(uid)
        grouped = await asyncio.shield(batch.result)
        if len(batch.wanted) < self.ALONE:
            return None
        return grouped.get(uid, [])

    async def _run(self, namespace: str, batch: _Batch) -> None:
        # Wait while loops keep joining (kopf starts a thousand within a second or two), up to
        # MAX_WAIT: one LIST for all of them, not one per window.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.MAX_WAIT
        seen = 0
        while len(batch.wanted) > seen and loop.time() < give_up:
            seen = len(batch.wanted)
            await asyncio.sleep(self.WINDOW)
        batch.started = True
        if self.batches.get(namespace) is batch:
            del self.batches[namespace]
        grouped: dict[str, list[dict[str, Any]]] = {}
        try:
            if len(batch.wanted) >= self.ALONE:
                async for cm in self.kube.list_config_maps(namespace, UID_LABEL):
                    uid = ((cm.get("metadata") or {}).get("labels") or {}).get(UID_LABEL)
                    if uid in batch.wanted:
                        grouped.setdefault(uid, []).append(cm)
        except Exception as e:  # each loop retries its load on its next turn
            batch.result.set_exception(e)
            batch.result.exception()  # retrieved: the loops see it through their own await
            return
        if len(batch.wanted) >= self.ALONE:
            log.info(
                "%s: the transcripts of %d tasks loaded with one LIST",
                namespace, len(batch.wanted),
            )  # fmt: skip
        batch.result.set_result(grouped)
