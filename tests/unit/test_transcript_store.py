"""Unit tests of ``effects.transcript``: UTF-8 chunking, parsing, names, and the chunked store.

The store runs against :class:`FakeKube`, an in-memory stand-in for the four ConfigMap methods
of ``effects.kube.Kube`` that enforces what the API server does: create of an existing name and
replace at a stale resourceVersion raise ``Conflict``.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType, SimpleNamespace
from typing import Any, cast

import pytest

from agenttask_operator.effects import transcript as tr
from agenttask_operator.effects.kube import Conflict, Kube
from agenttask_operator.effects.transcript import (
    CHUNK_LABEL,
    DATA_KEY,
    UID_LABEL,
    TranscriptStore,
    chunk_name,
    parse,
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
    """The ConfigMap methods of Kube, in memory, with resourceVersion preconditions."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = 100
        self.crash_on_write: int | None = None  # the N-th next create/replace raises Crash
        self.deleted: list[str] = []  # names, in the order of the delete calls

    def _write(self) -> str:
        if self.crash_on_write is not None:
            self.crash_on_write -= 1
            if self.crash_on_write == 0:
                self.crash_on_write = None
                raise Crash
        self._rv += 1
        return str(self._rv)

    async def list_config_maps(self, namespace: str, selector: str) -> list[Any]:
        key, _, value = selector.partition("=")
        out = []
        for (ns, _name), obj in self.objects.items():
            meta = obj["metadata"]
            if ns == namespace and meta.get("labels", {}).get(key) == value:
                out.append(
                    SimpleNamespace(
                        metadata=SimpleNamespace(
                            name=meta["name"],
                            labels=dict(meta.get("labels", {})),
                            resource_version=meta["resourceVersion"],
                        ),
                        data=dict(obj.get("data") or {}),
                    )
                )
        return out

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        assert "resourceVersion" not in body["metadata"], "create must not carry an rv"
        if (namespace, name) in self.objects:
            raise Conflict(f"ConfigMap {name} exists")
        rv = self._write()
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = rv
        self.objects[namespace, name] = obj
        return rv

    async def replace_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        current = self.objects.get((namespace, name))
        if current is None:
            raise Conflict(f"ConfigMap {name}: Not Found")
        wanted = body["metadata"].get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise Conflict(f"ConfigMap {name}: the object has been modified")
        rv = self._write()
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = rv
        self.objects[namespace, name] = obj
        return rv

    async def delete_config_map(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.objects.pop((namespace, name), None)

    # --- test helpers ---

    def names(self) -> set[str]:
        return {name for (_ns, name) in self.objects}

    def rv(self, name: str) -> str:
        return str(self.objects[NS, name]["metadata"]["resourceVersion"])

    def stream(self, uid: str = UID) -> str:
        by_index = {
            int(o["metadata"]["labels"][CHUNK_LABEL]): o["data"][DATA_KEY]
            for o in self.of(uid).values()
        }
        return "".join(by_index[i] for i in sorted(by_index))

    def of(self, uid: str) -> dict[str, dict[str, Any]]:
        """The objects labelled with ``uid``, by name."""
        return {
            name: obj
            for (_ns, name), obj in self.objects.items()
            if obj["metadata"]["labels"].get(UID_LABEL) == uid
        }

    def indexes(self, uid: str = UID) -> list[int]:
        """The chunk labels of ``uid``'s objects, sorted, duplicates kept."""
        return sorted(int(o["metadata"]["labels"][CHUNK_LABEL]) for o in self.of(uid).values())


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(tr, "CHUNK_BYTES", CHUNK)
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
        entry(1, "😀 €uro ünïcödé 漢字 " * 9),  # several chunks, multi-byte everywhere
        entry(2, "short"),
        entry(3, "x" * (5 * CHUNK + 3)),  # exactly-full chunks and a tail
        entry(4, "done", kind="LLM", usage=Usage(prompt_tokens=1, total_tokens=1)),
    ]


async def test_empty_transcript_loads_as_nothing(kube: FakeKube, small_chunks: int) -> None:
    s = store(kube)
    assert await s.load() == ()
    assert s.info().to_api() == {"configMaps": [], "entries": 0, "bytes": 0}


async def test_appends_round_trip_through_load(kube: FakeKube, small_chunks: int) -> None:
    s = await loaded(kube)
    entries = conversation()
    for e in entries:
        await s.append(e)
        assert (await loaded(kube)).entries == s.entries
    assert s.entries == tuple(entries)
    fresh = await loaded(kube)
    assert fresh.entries == tuple(entries)
    assert kube.stream() == "".join(line(e) for e in entries)


async def test_chunks_are_full_sized_valid_utf8_configmaps(
    kube: FakeKube, small_chunks: int
) -> None:
    s = await loaded(kube)
    for e in conversation():
        await s.append(e)
    info = s.info()
    assert len(info.config_maps) >= 10
    assert kube.names() == set(info.config_maps)
    assert info.entries == 5
    assert info.bytes == len(kube.stream().encode())
    for i, name in enumerate(info.config_maps):
        assert name == chunk_name(TASK, UID, i)
        obj = kube.objects[NS, name]
        data = obj["data"][DATA_KEY]
        assert 0 < len(data.encode()) <= CHUNK
        if i < len(info.config_maps) - 1:  # greedy: only the last chunk may have room left
            assert len(data.encode()) > CHUNK - 4
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["labels"][UID_LABEL] == UID
        assert meta["labels"][CHUNK_LABEL] == str(i)
        [owner] = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "AgentTask",
            TASK,
            UID,
            True,
        )


async def test_appending_rewrites_only_the_tail(kube: FakeKube, small_chunks: int) -> None:
    s = await loaded(kube)
    await s.append(entry(1, "z" * (4 * CHUNK)))
    before = {name: kube.rv(name) for name in kube.names()}
    await s.append(entry(2, "tiny"))
    changed = {name for name in before if kube.rv(name) != before[name]}
    last = chunk_name(TASK, UID, len(before) - 1)
    assert changed <= {last}
    assert (await loaded(kube)).entries == s.entries


async def test_long_task_name_round_trips(kube: FakeKube, small_chunks: int) -> None:
    name = "n" * 250
    s = await loaded(kube, task=name)
    await s.append(entry(1, "é" * 100))
    assert all(len(n) <= 253 for n in kube.names())
    assert (await loaded(kube, task=name)).entries == s.entries


async def test_load_ignores_other_tasks_and_unlabelled_chunks(
    kube: FakeKube, small_chunks: int
) -> None:
    mine, theirs = await loaded(kube), await loaded(kube, task="other", uid="other-uid")
    await mine.append(entry(1, "mine"))
    await theirs.append(entry(1, "theirs"))
    kube.objects[NS, "junk"] = {
        "metadata": {
            "name": "junk",
            "labels": {UID_LABEL: UID, CHUNK_LABEL: "not-a-number"},
            "resourceVersion": "1",
        },
        "data": {DATA_KEY: line(entry(9, "junk"))},
    }
    assert (await loaded(kube)).entries == (entry(1, "mine"),)
    assert (await loaded(kube, task="other", uid="other-uid")).entries == (entry(1, "theirs"),)


async def test_load_stops_at_a_missing_chunk(kube: FakeKube, small_chunks: int) -> None:
    s = await loaded(kube)
    first = entry(1, "a")
    await s.append(first)
    await s.append(entry(2, "b" * (3 * CHUNK)))
    gap = len(split_utf8(line(first), CHUNK))  # the first chunk holding only the second line
    del kube.objects[NS, chunk_name(TASK, UID, gap)]
    assert (await loaded(kube)).entries == (first,)


@pytest.mark.parametrize("crash_on_write", [1, 2, 3, 5])
async def test_torn_append_is_ignored_and_overwritten(
    kube: FakeKube, small_chunks: int, crash_on_write: int
) -> None:
    s = await loaded(kube)
    first = entry(1, "kept " * 20)
    await s.append(first)
    kube.crash_on_write = crash_on_write
    with pytest.raises(Crash):
        await s.append(entry(2, "lost " * 60))  # needs more writes than crash_on_write
    # after the crash, a new operator process reads what is stored
    after_crash = await loaded(kube)
    assert after_crash.entries == (first,)
    if crash_on_write == 1:
        assert kube.stream() == line(first)
    else:
        assert kube.stream().startswith(line(first))
        assert not kube.stream().endswith("\n")
    third = entry(3, "next")
    await after_crash.append(third)
    final = await loaded(kube)
    assert final.entries == (first, third)
    assert kube.stream() == line(first) + line(third)  # no trace of the torn line
    assert kube.names() == set(final.info().config_maps)


async def test_torn_append_then_same_store_carries_on(kube: FakeKube, small_chunks: int) -> None:
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
    assert kube.stream() == line(first) + line(second)


async def test_torn_append_leftover_chunks_are_deleted(kube: FakeKube, small_chunks: int) -> None:
    s = await loaded(kube)
    first, third = entry(1, "a"), entry(3, "b")
    await s.append(first)
    kube.crash_on_write = 6  # five chunk writes of a long line land, then the crash
    with pytest.raises(Crash):
        await s.append(entry(2, "L" * (10 * CHUNK)))
    needed = len(split_utf8(line(first) + line(third), CHUNK))
    assert len(kube.names()) > needed  # the torn line left chunks beyond the new end
    fresh = await loaded(kube)
    await fresh.append(third)
    assert kube.names() == {chunk_name(TASK, UID, i) for i in range(needed)}
    assert kube.stream() == line(first) + line(third)
    assert (await loaded(kube)).entries == (first, third)


async def test_concurrent_first_writers_conflict(kube: FakeKube, small_chunks: int) -> None:
    a, b = await loaded(kube), await loaded(kube)
    await a.append(entry(1, "from a"))
    with pytest.raises(Conflict):
        await b.append(entry(1, "from b"))
    assert b.entries == (entry(1, "from a"),)  # b has re-read what is stored
    assert (await loaded(kube)).entries == (entry(1, "from a"),)
    await b.append(entry(2, "b after re-read"))
    assert (await loaded(kube)).entries == (entry(1, "from a"), entry(2, "b after re-read"))


async def test_stale_writer_conflicts(kube: FakeKube, small_chunks: int) -> None:
    seed = await loaded(kube)
    await seed.append(entry(1, "seed"))
    a, b = await loaded(kube), await loaded(kube)
    await a.append(entry(2, "a wins"))
    stored = kube.stream()
    with pytest.raises(Conflict):
        await b.append(entry(2, "b loses"))
    assert kube.stream() == stored  # the loser changed nothing
    assert b.entries == (entry(1, "seed"), entry(2, "a wins"))


async def test_conflict_on_a_later_chunk(kube: FakeKube, small_chunks: int) -> None:
    seed = await loaded(kube)
    await seed.append(entry(1, "s" * (2 * CHUNK)))  # chunks 0-2, chunk 2 partly filled
    a, b = await loaded(kube), await loaded(kube)
    await a.append(entry(2, "A" * (2 * CHUNK)))
    stored = kube.stream()
    with pytest.raises(Conflict):
        await b.append(entry(2, "B" * (2 * CHUNK)))
    assert kube.stream() == stored
    assert (await loaded(kube)).entries == (entry(1, "s" * (2 * CHUNK)), entry(2, "A" * 2 * CHUNK))


async def test_line_separator_in_a_message_survives_a_reload(
    kube: FakeKube, small_chunks: int
) -> None:
    s = await loaded(kube)
    e = entry(1, "a web page\u2028with a line separator")
    await s.append(e)
    assert (await loaded(kube)).entries == (e,)


# --- incarnations: a task deleted and created again under the same name -----------------------


def legacy_chunk_name(task_name: str, uid: str, index: int) -> str:
    """The naming before uids were part of every name (``<task>-transcript-<n>``)."""
    suffix = f"-transcript-{index}"
    if len(task_name) + len(suffix) <= 253:
        return task_name + suffix
    return f"{task_name[: 253 - len(suffix) - 9]}-{uid[:8]}{suffix}"


async def write_legacy(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, entries: list[Entry], uid: str = UID
) -> None:
    """Store ``entries`` as an operator of the earlier naming would have."""
    with monkeypatch.context() as m:
        m.setattr(tr, "chunk_name", legacy_chunk_name)
        s = await loaded(kube, uid=uid)
        for e in entries:
            await s.append(e)
    assert kube.of(uid) and all("-transcript-" in n for n in kube.of(uid))


@pytest.mark.parametrize("legacy", [False, True])
async def test_a_recreated_task_never_meets_the_old_incarnation(
    kube: FakeKube, small_chunks: int, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    old_entries = conversation()
    if legacy:  # the old incarnation ran under the operator of the earlier naming
        await write_legacy(kube, monkeypatch, old_entries)
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
    info = new.info()
    assert set(info.config_maps) == set(kube.of(OTHER_UID))
    assert not set(info.config_maps) & {name for (_ns, name) in before}
    for name in info.config_maps:
        [owner] = kube.objects[NS, name]["metadata"]["ownerReferences"]
        assert owner["uid"] == OTHER_UID
    assert kube.indexes(OTHER_UID) == list(range(len(info.config_maps)))


async def test_chunks_of_the_earlier_naming_carry_on_under_their_names(
    kube: FakeKube, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = [entry(1, "legacy " * 20, kind="LLM"), entry(1, "a tool answer")]
    await write_legacy(kube, monkeypatch, first)
    legacy_names = {legacy_chunk_name(TASK, UID, i) for i in range(len(kube.objects))}
    assert kube.names() == legacy_names

    s = await loaded(kube)  # the upgraded operator picks the running task up
    assert s.entries == tuple(first)
    assert set(s.info().config_maps) == legacy_names
    last = legacy_chunk_name(TASK, UID, len(legacy_names) - 1)
    last_rv = kube.rv(last)
    more = entry(2, "after the upgrade " * 10, kind="LLM")
    await s.append(more)

    assert kube.rv(last) != last_rv  # the partly filled tail was replaced under its own name
    assert legacy_names < kube.names()
    added = kube.names() - legacy_names
    assert added == {chunk_name(TASK, UID, i) for i in range(len(legacy_names), len(kube.names()))}
    assert kube.indexes() == list(range(len(kube.names())))  # one object per chunk
    info = s.info()
    assert set(info.config_maps) == kube.names()
    assert [
        int(kube.objects[NS, n]["metadata"]["labels"][CHUNK_LABEL]) for n in info.config_maps
    ] == list(range(len(info.config_maps)))
    assert (await loaded(kube)).entries == (*first, more)
    assert kube.stream() == "".join(line(e) for e in (*first, more))


async def test_torn_leftovers_of_the_earlier_naming_are_deleted_by_their_names(
    kube: FakeKube, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = entry(1, "a")
    await write_legacy(kube, monkeypatch, [first])
    with monkeypatch.context() as m:
        m.setattr(tr, "chunk_name", legacy_chunk_name)
        s = await loaded(kube)
        kube.crash_on_write = 6
        with pytest.raises(Crash):
            await s.append(entry(2, "L" * (10 * CHUNK)))
    fresh = await loaded(kube)
    third = entry(3, "b")
    await fresh.append(third)
    needed = len(split_utf8(line(first) + line(third), CHUNK))
    assert kube.names() == {legacy_chunk_name(TASK, UID, i) for i in range(needed)}
    assert kube.stream() == line(first) + line(third)
    assert set(fresh.info().config_maps) == kube.names()


async def test_leftovers_are_deleted_last_first(kube: FakeKube, small_chunks: int) -> None:
    s = await loaded(kube)
    first = entry(1, "a")
    await s.append(first)
    kube.crash_on_write = 6
    with pytest.raises(Crash):
        await s.append(entry(2, "L" * (10 * CHUNK)))
    fresh = await loaded(kube)
    await fresh.append(entry(3, "b"))
    indexes = [int(name.rsplit("-", 1)[1]) for name in kube.deleted]
    assert len(indexes) >= 2
    assert indexes == sorted(indexes, reverse=True)  # a crash meanwhile leaves no gap


@pytest.mark.parametrize("legacy", [False, True])
async def test_a_chunk_beyond_a_gap_is_reused_not_doubled(
    kube: FakeKube, small_chunks: int, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    first = entry(1, "a")
    big = entry(2, "b" * (6 * CHUNK))
    if legacy:
        await write_legacy(kube, monkeypatch, [first, big])
    else:
        s = await loaded(kube)
        await s.append(first)
        await s.append(big)
    gap = len(split_utf8(line(first), CHUNK))  # the first chunk holding only the big line
    by_index = {
        int(o["metadata"]["labels"][CHUNK_LABEL]): n for (_ns, n), o in kube.objects.items()
    }
    beyond = {i: by_index[i] for i in by_index if i > gap}
    del kube.objects[NS, by_index[gap]]

    fresh = await loaded(kube)
    assert fresh.entries == (first,)
    third = entry(3, "c" * (3 * CHUNK))  # reaches past the gap into the chunks beyond it
    await fresh.append(third)
    assert kube.indexes() == list(range(len(kube.names())))  # never two objects for one chunk
    reused = {i: n for i, n in beyond.items() if (NS, n) in kube.objects}
    assert reused  # the chunks beyond the gap were rewritten under their stored names …
    assert all(i < len(kube.names()) for i in reused)  # … or deleted beyond the new end
    assert (await loaded(kube)).entries == (first, third)
    assert kube.stream() == line(first) + line(third)
    assert set(fresh.info().config_maps) == kube.names()
