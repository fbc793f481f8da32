"""Unit tests of ``effects.transcript``: UTF-8 splitting, parsing, names, and the segment store.

The store runs against :class:`FakeKube`, an in-memory stand-in for the ConfigMap methods of
``effects.kube.Kube`` that enforces what the API server does: create of an existing name
raises ``Conflict``, an immutable ConfigMap cannot be replaced. It counts every write, so the
tests can state exactly what an append costs.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, cast

import pytest

from agenttask_operator.effects import transcript as tr
from agenttask_operator.effects.kube import Conflict, Kube
from agenttask_operator.effects.transcript import (
    CHUNK_LABEL,
    DATA_KEY,
    PART_ANNOTATION,
    SEGMENT_LABEL,
    UID_LABEL,
    TranscriptStore,
    chunk_name,
    parse,
    segment_name,
    split_utf8,
    uid_tag,
    valid_prefix,
)
from agenttask_operator.models import Entry, Usage

NS = "team-a"
TASK = "disk-cleanup"
UID = "5f0c8e2a-93d1-4b7e-a1c2-0123456789ab"
CHUNK = 64  # bytes per ConfigMap in these tests


# --- split_utf8 --------------------------------------------------------------------------------

CHARS = [("a", 1), ("é", 2), ("€", 3), ("😀", 4)]


def check_split(text: str, limit: int) -> list[str]:
    pieces = split_utf8(text, limit)
    assert "".join(pieces) == text
    assert all(0 < len(p.encode()) <= limit for p in pieces)
    # greedy: no piece could have taken the next character too
    for piece, following in itertools.pairwise(pieces):
        assert len(piece.encode()) + len(following[0].encode()) > limit
    return pieces


@pytest.mark.parametrize(
    ("char", "width", "limit"),
    [(c, w, limit) for c, w in CHARS for limit in range(1, 8) if limit >= w],
)
@pytest.mark.parametrize("count", [1, 2, 5, 13])
def test_split_utf8_single_width_runs(char: str, width: int, limit: int, count: int) -> None:
    pieces = check_split(char * count, limit)
    per_piece = limit // width
    assert [len(p) for p in pieces[:-1]] == [per_piece] * (len(pieces) - 1)


MIXED = "aé€😀" * 5 + "x" + "😀€éa" * 3 + "漢字かな" + "\n{}\n"


@pytest.mark.parametrize("limit", [4, 5, 6, 7, 8, 9, 10, 16, 31, 64, 1000])
def test_split_utf8_mixed_widths_never_cuts_a_character(limit: int) -> None:
    check_split(MIXED, limit)


@pytest.mark.parametrize("limit", [1, 4, 100])
def test_split_utf8_empty_text(limit: int) -> None:
    assert split_utf8("", limit) == []


def test_split_utf8_text_that_fits_is_one_piece() -> None:
    assert split_utf8("héllo", 6) == ["héllo"]
    assert split_utf8("héllo", 600) == ["héllo"]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abcdef", 2, ["ab", "cd", "ef"]),
        ("abcdefg", 3, ["abc", "def", "g"]),
        ("ab€", 3, ["ab", "€"]),
        ("ab€c", 4, ["ab", "€c"]),
        ("a😀", 4, ["a", "😀"]),
        ("😀😀", 7, ["😀", "😀"]),
        ("😀😀", 8, ["😀😀"]),
        ("éé€", 5, ["éé", "€"]),
    ],
)
def test_split_utf8_exact_pieces(text: str, limit: int, expected: list[str]) -> None:
    assert split_utf8(text, limit) == expected


class _Runaway(Exception):
    pass


def run_bounded(fn: Callable[[], object], max_lines: int = 20_000) -> object:
    """Run ``fn``, aborting with _Runaway once it has executed ``max_lines`` lines."""
    executed = 0

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal executed
        executed += 1
        if executed > max_lines:
            raise _Runaway
        return local

    def global_trace(frame: FrameType, event: str, arg: object) -> Any:
        return local

    sys.settrace(global_trace)
    try:
        return fn()
    finally:
        sys.settrace(None)


@pytest.mark.parametrize(("text", "limit"), [("😀", 1), ("😀", 3), ("€", 2), ("é", 1)])
def test_split_utf8_with_a_limit_below_a_character_width_terminates(text: str, limit: int) -> None:
    try:
        pieces = run_bounded(lambda: split_utf8(text, limit))
    except ValueError:
        return  # refusing is fine; hanging is not
    assert "".join(cast(list[str], pieces)) == text


# --- valid_prefix / parse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "prefix"),
    [
        ("", ""),
        ("{partial", ""),
        ("a\n", "a\n"),
        ("a\nb", "a\n"),
        ("a\nb\n", "a\nb\n"),
        ('a\nb\n{"torn', "a\nb\n"),
        ("\n", "\n"),
    ],
)
def test_valid_prefix(stream: str, prefix: str) -> None:
    assert valid_prefix(stream) == prefix


def entry(
    i: int, text: str = "", *, kind: str = "Tool", usage: Usage | None = None, **extra: Any
) -> Entry:
    if kind == "LLM":
        return Entry(
            kind="LLM",
            iteration=i,
            message={"role": "assistant", "content": text},
            usage=usage,
            finish_reason="stop",
            time=datetime(2025, 1, 1, 0, 0, i % 60, tzinfo=UTC),
            **extra,
        )
    return Entry(
        kind="Tool",
        iteration=i,
        tool_call_id=f"call_{i}",
        message={"role": "tool", "tool_call_id": f"call_{i}", "content": text},
        **extra,
    )


def line(e: Entry) -> str:
    return json.dumps(e.to_api(), ensure_ascii=False, separators=(",", ":")) + "\n"


def test_parse_complete_lines() -> None:
    entries = [entry(1, "one", kind="LLM", usage=Usage(total_tokens=3)), entry(1, "two")]
    assert parse("".join(line(e) for e in entries)) == tuple(entries)


def test_parse_ignores_an_incomplete_last_line() -> None:
    e = entry(1, "kept")
    torn = line(entry(2, "lost"))[:-5]
    assert parse(line(e) + torn) == (e,)


def test_parse_ignores_a_complete_json_object_without_its_newline() -> None:
    e = entry(1, "kept")
    assert parse(line(e) + line(entry(2, "unterminated")).rstrip("\n")) == (e,)


@pytest.mark.parametrize("stream", ["", "{", '{"kind":"LLM"'])
def test_parse_nothing_complete(stream: str) -> None:
    assert parse(stream) == ()


def test_parse_skips_blank_lines() -> None:
    e = entry(3, "x")
    assert parse("\n" + line(e) + "\n") == (e,)


def test_parse_keeps_escaped_newlines_inside_content() -> None:
    e = entry(1, "line one\nline two\r\n\ttab")
    assert parse(line(e)) == (e,)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_parse_content_with_unicode_line_separators(separator: str) -> None:
    e = entry(1, f"before{separator}after")
    assert parse(line(e)) == (e,)


# --- chunk_name --------------------------------------------------------------------------------

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
OTHER_UID = "99999999-0000-0000-0000-000000000000"


def test_chunk_name_short() -> None:
    assert chunk_name("my-task", UID, 0) == "my-task-5f0c8e2a-transcript-0"
    assert chunk_name("my-task", UID, 17) == "my-task-5f0c8e2a-transcript-17"


def test_segment_names_sort_in_order_after_the_chunks() -> None:
    assert segment_name("my-task", UID, 0) == "my-task-5f0c8e2a-transcript-s000000"
    assert segment_name("my-task", UID, 1234) == "my-task-5f0c8e2a-transcript-s001234"
    names = [segment_name("t", UID, i) for i in range(0, 1_000_000, 997)]
    assert names == sorted(names)  # `kubectl get cm` lists them in order …
    assert max(chunk_name("t", UID, i) for i in range(10)) < names[0]  # … after the chunks


@pytest.mark.parametrize("length", [1, 63, 200, 238, 239, 240, 253, 300])
@pytest.mark.parametrize("index", [0, 9, 999_999, 12_345_678])
def test_segment_name_length_and_determinism(length: int, index: int) -> None:
    name = "t" * length
    got = segment_name(name, UID, index)
    assert len(got) <= 253
    assert got.endswith(f"-{UID[:8]}-transcript-s{index:06d}")
    assert got == segment_name(name, UID, index) != segment_name(name, OTHER_UID, index)
    assert DNS_SUBDOMAIN.fullmatch(got)
    assert got != segment_name(name, UID, index + 1)


@pytest.mark.parametrize("length", [1, 63, 200, 231, 232, 233, 240, 252, 253, 254, 300, 1000])
@pytest.mark.parametrize("index", [0, 1, 9, 10, 99, 12345])
def test_chunk_name_length_and_determinism(length: int, index: int) -> None:
    name = "t" * length
    got = chunk_name(name, UID, index)
    suffix = f"-{UID[:8]}-transcript-{index}"
    assert len(got) <= 253
    assert got.endswith(suffix)
    assert got == chunk_name(name, UID, index)
    assert DNS_SUBDOMAIN.fullmatch(got)
    if length + len(suffix) <= 253:
        assert got == name + suffix
    else:
        assert len(got) == 253


@pytest.mark.parametrize("name", ["t", "disk-cleanup", "x" * 300])
def test_chunk_names_differ_by_uid(name: str) -> None:
    for i in (0, 1, 12):
        assert chunk_name(name, UID, i) != chunk_name(name, OTHER_UID, i)


def test_chunk_names_of_one_task_are_distinct() -> None:
    for name in ["t", "t" * 240, "t" * 400]:
        names = {chunk_name(name, UID, i) for i in range(200)}
        assert len(names) == 200


@pytest.mark.parametrize(
    "name",
    [
        "a" * 230 + "." + "b" * 30,  # cut right after the dot
        "a" * 231 + "-" + "b" * 30,  # cut right after a dash
        "a" * 200 + ".-.-" * 20,
        "a.b-c." * 60 + "z",
    ],
)
@pytest.mark.parametrize("index", [0, 7, 123])
def test_cut_long_names_stay_dns_subdomains(name: str, index: int) -> None:
    got = chunk_name(name, UID, index)
    assert len(got) <= 253
    assert DNS_SUBDOMAIN.fullmatch(got), got


@pytest.mark.parametrize(
    ("uid", "tag"),
    [
        (UID, "5f0c8e2a"),
        ("5F0C8E2A-93D1-4B7E-A1C2-0123456789AB", "5f0c8e2a"),
        ("other-uid", "otheruid"),
        ("a.b_c-d", None),  # too few usable characters: hashed
        ("", None),
    ],
)
def test_uid_tag_is_fixed_length_and_dns_safe(uid: str, tag: str | None) -> None:
    got = uid_tag(uid)
    assert len(got) == 8 and re.fullmatch("[0-9a-z]{8}", got)
    if tag is not None:
        assert got == tag
    assert got == uid_tag(uid)


# --- the store, against a fake API -------------------------------------------------------------


class Crash(Exception):
    """The operator died in the middle of a write sequence."""


class FakeKube:
    """The ConfigMap methods of Kube, in memory: create only; immutable objects stay as created."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = 100
        self.crash_on_write: int | None = None  # the N-th next create raises Crash
        self.creates: list[dict[str, Any]] = []  # bodies, in order
        self.other_writes = 0  # replace or delete calls: the store must make none
        self.lists: list[str] = []  # label selectors of the LIST requests

    def _write(self) -> str:
        if self.crash_on_write is not None:
            self.crash_on_write -= 1
            if self.crash_on_write == 0:
                self.crash_on_write = None
                raise Crash
        self._rv += 1
        return str(self._rv)

    async def list_config_maps(
        self, namespace: str, selector: str, page: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        self.lists.append(selector)
        key, _, value = selector.partition("=")
        for (ns, _name), obj in list(self.objects.items()):
            labels = obj["metadata"].get("labels", {})
            if ns == namespace and key in labels and (not value or labels[key] == value):
                yield copy.deepcopy(obj)

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        assert "resourceVersion" not in body["metadata"], "create must not carry an rv"
        if (namespace, name) in self.objects:
            raise Conflict(f"ConfigMap {name} exists")
        rv = self._write()
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = rv
        self.objects[namespace, name] = obj
        self.creates.append(copy.deepcopy(body))
        return rv

    async def replace_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        self.other_writes += 1
        raise AssertionError("a transcript ConfigMap is never rewritten")

    async def delete_config_map(self, namespace: str, name: str) -> None:
        self.other_writes += 1
        raise AssertionError("a transcript ConfigMap is never deleted by the operator")

    # --- test helpers ---

    def put(self, name: str, labels: dict[str, str], text: str, **annotations: str) -> None:
        """Store an object directly (an earlier version's chunk, a stray, a zombie's write)."""
        self._rv += 1
        self.objects[NS, name] = {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": annotations,
                "resourceVersion": str(self._rv),
            },
            "data": {DATA_KEY: text},
        }

    def names(self) -> set[str]:
        return {name for (_ns, name) in self.objects}

    def of(self, uid: str) -> dict[str, dict[str, Any]]:
        """The objects labelled with ``uid``, by name."""
        return {
            name: obj
            for (_ns, name), obj in self.objects.items()
            if obj["metadata"]["labels"].get(UID_LABEL) == uid
        }

    def segments(self, uid: str = UID) -> dict[int, dict[str, Any]]:
        """``uid``'s segment objects by index."""
        return {
            int(o["metadata"]["labels"][SEGMENT_LABEL]): o
            for o in self.of(uid).values()
            if SEGMENT_LABEL in o["metadata"]["labels"]
        }

    def stream(self, uid: str = UID) -> str:
        """What a user gets by concatenating the data of the ConfigMaps in name order."""
        objs = sorted(self.of(uid).items())
        return "".join(o["data"][DATA_KEY] for _n, o in objs)


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(tr, "SEGMENT_BYTES", CHUNK)
    return CHUNK


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


def store(kube: FakeKube, task: str = TASK, uid: str = UID) -> TranscriptStore:
    return TranscriptStore(cast(Kube, kube), NS, task, uid)


async def loaded(kube: FakeKube, task: str = TASK, uid: str = UID) -> TranscriptStore:
    s = store(kube, task, uid)
    await s.load()
    return s


def conversation() -> list[Entry]:
    return [
        entry(1, "Let me check the disk first. " * 4, kind="LLM", usage=Usage(total_tokens=9)),
        entry(1, "😀 €uro ünïcödé 漢字 " * 9),  # several segments, multi-byte everywhere
        entry(2, "short"),
        entry(3, "x" * (5 * CHUNK + 3)),  # exactly-full segments and a tail
        entry(4, "done", kind="LLM", usage=Usage(prompt_tokens=1, total_tokens=1)),
    ]


def pieces(e: Entry) -> int:
    return len(split_utf8(line(e), CHUNK))


async def test_empty_transcript_loads_as_nothing(kube: FakeKube, small_segments: int) -> None:
    s = store(kube)
    assert await s.load() == ()
    assert s.info().to_api() == {"configMaps": [], "entries": 0, "bytes": 0, "segments": 0}
    assert s.found().missing_segments == ()


async def test_appends_round_trip_through_load(kube: FakeKube, small_segments: int) -> None:
    s = await loaded(kube)
    entries = conversation()
    for e in entries:
        await s.append(e)
        assert (await loaded(kube)).entries == s.entries
    assert s.entries == tuple(entries)
    fresh = await loaded(kube)
    assert fresh.entries == tuple(entries)
    assert fresh.info() == s.info()
    assert kube.stream() == "".join(line(e) for e in entries)  # readable with kubectl alone


async def test_segments_are_immutable_owned_labelled_parts(
    kube: FakeKube, small_segments: int
) -> None:
    s = await loaded(kube)
    entries = conversation()
    for e in entries:
        await s.append(e)
    info = s.info()
    total = sum(pieces(e) for e in entries)
    assert info.segments == total == len(kube.objects)
    assert info.entries == 5
    assert info.bytes == len(kube.stream().encode())
    assert info.config_maps == ()  # no chunk of the earlier layout
    index = 0
    for e in entries:
        n = pieces(e)
        for i in range(1, n + 1):
            obj = kube.objects[NS, segment_name(TASK, UID, index)]
            data = obj["data"][DATA_KEY]
            assert 0 < len(data.encode()) <= CHUNK
            assert data.endswith("\n") == (i == n)  # only an entry's last part ends its line
            assert obj["immutable"] is True
            meta = obj["metadata"]
            assert meta["namespace"] == NS
            assert meta["labels"][UID_LABEL] == UID
            assert meta["labels"][SEGMENT_LABEL] == str(index)
            assert meta["annotations"][PART_ANNOTATION] == f"{i}/{n}"
            [owner] = meta["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "AgentTask",
                TASK,
                UID,
                True,
            )
            index += 1


@pytest.mark.parametrize("before", [0, 1, 50])
async def test_an_append_writes_its_own_line_and_nothing_else(kube: FakeKube, before: int) -> None:
    """The bytes an append sends are its line's, whatever the size of the transcript."""
    s = await loaded(kube)
    for i in range(before):
        await s.append(entry(i, "earlier output " * 1000))
    stored = copy.deepcopy(kube.objects)
    kube.creates.clear()
    new = entry(before + 1, "the new step's output " * 500)
    await s.append(new)
    [body] = kube.creates  # one request
    assert body["data"][DATA_KEY] == line(new)
    assert len(json.dumps(body).encode()) <= len(line(new).encode()) + 1024
    assert {k: v for k, v in kube.objects.items() if k in stored} == stored  # untouched
    assert kube.other_writes == 0


async def test_long_task_name_round_trips(kube: FakeKube, small_segments: int) -> None:
    name = "n" * 250
    s = await loaded(kube, task=name)
    await s.append(entry(1, "é" * 100))
    assert all(len(n) <= 253 for n in kube.names())
    assert (await loaded(kube, task=name)).entries == s.entries


async def test_load_ignores_other_tasks_and_unlabelled_objects(
    kube: FakeKube, small_segments: int
) -> None:
    mine, theirs = await loaded(kube), await loaded(kube, task="other", uid="other-uid")
    await mine.append(entry(1, "mine"))
    await theirs.append(entry(1, "theirs"))
    junk = line(entry(9, "junk"))
    kube.put("junk", {UID_LABEL: UID, SEGMENT_LABEL: "not-a-number"}, junk)
    kube.put("junk2", {UID_LABEL: UID, CHUNK_LABEL: "-1"}, junk)
    kube.put("junk3", {UID_LABEL: UID}, junk)
    assert (await loaded(kube)).entries == (entry(1, "mine"),)
    assert (await loaded(kube, task="other", uid="other-uid")).entries == (entry(1, "theirs"),)


async def test_a_deleted_segment_in_the_middle_is_reported(
    kube: FakeKube, small_segments: int
) -> None:
    s = await loaded(kube)
    first = entry(1, "a")
    await s.append(first)
    await s.append(entry(2, "b" * (3 * CHUNK)))
    await s.append(entry(3, "c"))
    gap = pieces(first) + 1  # the second part of the big entry
    del kube.objects[NS, segment_name(TASK, UID, gap)]
    fresh = await loaded(kube)
    assert fresh.entries == (first,)  # nothing after a gap is read
    found = fresh.found()
    assert found.missing_segments == (gap,)
    assert found.segments == s.info().segments  # the highest segment is still there
    assert found.entries == 1


async def test_deleted_last_segments_show_in_the_count(kube: FakeKube) -> None:
    s = await loaded(kube)
    for i in range(4):
        await s.append(entry(i, "x"))
    for i in (2, 3):
        del kube.objects[NS, segment_name(TASK, UID, i)]
    found = (await loaded(kube)).found()
    assert (found.entries, found.segments, found.missing_segments) == (2, 2, ())


@pytest.mark.parametrize("crash_on_write", [1, 2, 3, 5])
async def test_a_torn_append_is_skipped_never_rewritten(
    kube: FakeKube, small_segments: int, crash_on_write: int
) -> None:
    s = await loaded(kube)
    first = entry(1, "kept " * 20)
    await s.append(first)
    lost = entry(2, "lost " * 60)
    assert pieces(lost) > crash_on_write
    kube.crash_on_write = crash_on_write
    with pytest.raises(Crash):
        await s.append(lost)
    torn = crash_on_write - 1  # parts that landed
    # after the crash, a new operator process reads what is stored
    after_crash = await loaded(kube)
    assert after_crash.entries == (first,)
    assert after_crash.found().missing_segments == ()
    assert after_crash.info().segments == pieces(first) + torn
    third = entry(3, "next")
    await after_crash.append(third)
    final = await loaded(kube)
    assert final.entries == (first, third)
    assert final.info().bytes == len((line(first) + line(third)).encode())
    assert kube.other_writes == 0
    assert len(kube.objects) == pieces(first) + torn + pieces(third)


async def test_torn_append_then_same_store_carries_on(kube: FakeKube, small_segments: int) -> None:
    s = await loaded(kube)
    first = entry(1, "kept")
    await s.append(first)
    kube.crash_on_write = 3
    with pytest.raises(Crash):
        await s.append(entry(2, "lost " * 60))
    assert s.entries == (first,)
    second = entry(3, "again " * 30)
    await s.append(second)
    assert (await loaded(kube)).entries == (first, second)
    assert s.info() == (await loaded(kube)).info()


async def test_parts_out_of_order_never_make_an_entry(kube: FakeKube, small_segments: int) -> None:
    """A torn run, then another writer's entry, then a late part of the torn run (a writer that
    lost the task but still runs): only whole runs of parts 1..n count.
    """
    s = await loaded(kube)
    first = entry(1, "a")
    await s.append(first)
    at = s.info().segments
    name = segment_name
    late = line(entry(2, "zombie " * 10))
    kube.put(name(TASK, UID, at), {UID_LABEL: UID, SEGMENT_LABEL: str(at)}, late[:30],
             **{PART_ANNOTATION: "1/2"})  # fmt: skip
    other = line(entry(2, "winner"))
    kube.put(name(TASK, UID, at + 1), {UID_LABEL: UID, SEGMENT_LABEL: str(at + 1)}, other,
             **{PART_ANNOTATION: "1/1"})  # fmt: skip
    kube.put(name(TASK, UID, at + 2), {UID_LABEL: UID, SEGMENT_LABEL: str(at + 2)}, late[30:],
             **{PART_ANNOTATION: "2/2"})  # fmt: skip
    kube.put(name(TASK, UID, at + 3), {UID_LABEL: UID, SEGMENT_LABEL: str(at + 3)}, other,
             **{PART_ANNOTATION: "bogus"})  # fmt: skip
    fresh = await loaded(kube)
    assert fresh.entries == (first, entry(2, "winner"))
    assert fresh.info().segments == at + 4
    await fresh.append(entry(3, "next"))
    assert (await loaded(kube)).entries == (first, entry(2, "winner"), entry(3, "next"))


async def test_concurrent_first_writers_conflict(kube: FakeKube, small_segments: int) -> None:
    a, b = await loaded(kube), await loaded(kube)
    await a.append(entry(1, "from a"))
    with pytest.raises(Conflict):
        await b.append(entry(1, "from b"))
    assert b.entries == (entry(1, "from a"),)  # b has re-read what is stored
    assert (await loaded(kube)).entries == (entry(1, "from a"),)
    await b.append(entry(2, "b after re-read"))
    assert (await loaded(kube)).entries == (entry(1, "from a"), entry(2, "b after re-read"))


async def test_stale_writer_conflicts(kube: FakeKube, small_segments: int) -> None:
    seed = await loaded(kube)
    await seed.append(entry(1, "seed"))
    a, b = await loaded(kube), await loaded(kube)
    await a.append(entry(2, "a wins"))
    stored = copy.deepcopy(kube.objects)
    with pytest.raises(Conflict):
        await b.append(entry(2, "b loses"))
    assert kube.objects == stored  # the loser changed nothing
    assert b.entries == (entry(1, "seed"), entry(2, "a wins"))


async def test_conflict_on_a_later_part(kube: FakeKube, small_segments: int) -> None:
    seed = await loaded(kube)
    await seed.append(entry(1, "s" * (2 * CHUNK)))
    a, b = await loaded(kube), await loaded(kube)
    b.next_segment += 1  # b's first part lands; its second collides with a's entry
    await a.append(entry(2, "A" * (2 * CHUNK)))
    with pytest.raises(Conflict):
        await b.append(entry(2, "B" * (2 * CHUNK)))
    assert (await loaded(kube)).entries == (entry(1, "s" * (2 * CHUNK)), entry(2, "A" * 2 * CHUNK))


async def test_line_separator_in_a_message_survives_a_reload(
    kube: FakeKube, small_segments: int
) -> None:
    s = await loaded(kube)
    e = entry(1, "a web page\u2028with a line separator")
    await s.append(e)
    assert (await loaded(kube)).entries == (e,)


# --- the earlier layout: chunks, read and never written ------------------------------------------


def put_chunks(kube: FakeKube, text: str, uid: str = UID, legacy_names: bool = False) -> list[str]:
    """Store ``text`` as an earlier version did: chunks of CHUNK bytes, labelled by index."""
    names = []
    for i, piece in enumerate(split_utf8(text, CHUNK)):
        name = f"{TASK}-transcript-{i}" if legacy_names else chunk_name(TASK, uid, i)
        kube.put(name, {UID_LABEL: uid, CHUNK_LABEL: str(i)}, piece)
        names.append(name)
    return names


@pytest.mark.parametrize("legacy_names", [False, True])
async def test_chunks_are_read_first_and_segments_follow(
    kube: FakeKube, small_segments: int, legacy_names: bool
) -> None:
    first = [entry(1, "legacy " * 20, kind="LLM"), entry(1, "a tool answer")]
    names = put_chunks(kube, "".join(line(e) for e in first), legacy_names=legacy_names)
    stored = copy.deepcopy(kube.objects)

    s = await loaded(kube)  # the upgraded operator picks the running task up
    assert s.entries == tuple(first)
    assert s.info().config_maps == tuple(names)
    more = entry(2, "after the upgrade " * 10, kind="LLM")
    await s.append(more)

    assert {k: v for k, v in kube.objects.items() if k in stored} == stored  # chunks untouched
    assert kube.other_writes == 0
    fresh = await loaded(kube)
    assert fresh.entries == (*first, more)
    assert fresh.info() == s.info()
    info = s.info()
    assert info.config_maps == tuple(names)
    assert info.segments == pieces(more)
    assert info.bytes == len("".join(line(e) for e in (*first, more)).encode())
    if not legacy_names:  # name order is log order
        assert kube.stream() == "".join(line(e) for e in (*first, more))


async def test_a_torn_chunk_tail_is_ignored(kube: FakeKube, small_segments: int) -> None:
    first = entry(1, "kept")
    names = put_chunks(kube, line(first) + line(entry(2, "torn " * 40))[:-50])
    s = await loaded(kube)
    assert s.entries == (first,)
    assert s.info().bytes == len(line(first).encode())
    assert s.info().config_maps == tuple(names[: pieces(first)])  # those with complete lines
    await s.append(entry(3, "next"))
    assert (await loaded(kube)).entries == (first, entry(3, "next"))


# --- incarnations: a task deleted and created again under the same name -----------------------


@pytest.mark.parametrize("legacy", [False, True])
async def test_a_recreated_task_never_meets_the_old_incarnation(
    kube: FakeKube, small_segments: int, legacy: bool
) -> None:
    old_entries = conversation()
    if legacy:  # the old incarnation ran under an earlier version
        put_chunks(kube, "".join(line(e) for e in old_entries))
    else:
        old = await loaded(kube)
        for e in old_entries:
            await old.append(e)
    before = copy.deepcopy(kube.objects)  # the garbage collector has not removed them yet

    new = await loaded(kube, uid=OTHER_UID)  # same name, new uid
    assert new.entries == ()
    mine = [entry(1, "fresh " * 30, kind="LLM"), entry(1, "tool"), entry(2, "end", kind="LLM")]
    for e in mine:
        await new.append(e)

    assert {k: v for k, v in kube.objects.items() if k in before} == before  # untouched
    assert (await loaded(kube, uid=OTHER_UID)).entries == tuple(mine)
    assert (await loaded(kube)).entries == tuple(old_entries)
    assert not set(kube.of(OTHER_UID)) & {name for (_ns, name) in before}
    for obj in kube.of(OTHER_UID).values():
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == OTHER_UID
    assert sorted(kube.segments(OTHER_UID)) == list(range(new.info().segments))


# --- the loader: the loops that start together share one LIST ---------------------------------


@pytest.mark.parametrize("loops", [1, 3, 4, 50])
async def test_loops_that_start_together_share_one_list(kube: FakeKube, loops: int) -> None:
    uids = [f"uid-{i}" for i in range(loops)]
    for uid in [*uids, "finished-1", "finished-2"]:  # finished tasks' transcripts are there too
        s = await loaded(kube, task=uid, uid=uid)
        await s.append(entry(1, f"of {uid}"))
        await s.append(entry(2, f"more of {uid}"))
    kube.lists.clear()
    loader = tr.Loader(cast(Kube, kube))

    async def start(uid: str) -> tuple[Entry, ...]:
        s = store(kube, task=uid, uid=uid)
        return await s.load(await loader.items(NS, uid))

    got = await asyncio.gather(*(start(uid) for uid in uids))
    for uid, entries in zip(uids, got, strict=True):
        assert entries == (entry(1, f"of {uid}"), entry(2, f"more of {uid}"))
    if loops >= tr.Loader.ALONE:
        assert kube.lists == [UID_LABEL]  # one LIST (paginated) for all of them
    else:
        assert sorted(kube.lists) == sorted(f"{UID_LABEL}={uid}" for uid in uids)


async def test_a_loop_that_starts_later_gets_a_list_of_its_own(kube: FakeKube) -> None:
    loader = tr.Loader(cast(Kube, kube))
    for uid in ("a", "b", "c", "d", "late"):
        s = await loaded(kube, task=uid, uid=uid)
        await s.append(entry(1, uid))
    kube.lists.clear()
    first = await asyncio.gather(*(loader.items(NS, u) for u in "abcd"))
    assert [len(x or []) for x in first] == [1, 1, 1, 1]
    assert await loader.items(NS, "late") is None  # alone: it lists its own
    assert kube.lists == [UID_LABEL]


async def test_a_failed_list_fails_every_loop_of_the_batch(kube: FakeKube) -> None:
    class Boom(Exception):
        pass

    async def broken(namespace: str, selector: str, page: int = 500) -> AsyncIterator[Any]:
        raise Boom
        yield

    kube.list_config_maps = broken  # type: ignore[method-assign]
    loader = tr.Loader(cast(Kube, kube))
    got = await asyncio.gather(*(loader.items(NS, u) for u in "abcde"), return_exceptions=True)
    assert all(isinstance(g, Boom) for g in got)
