"""Unit tests of the bundled built-in tools (``check_disk``, ``clean_logs``) and their registry.

Files get fixed modification times far in the past (2001) or far in the future (2096), so the
age filter of ``clean_logs`` gives the same answer whatever the real clock says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agenttask_operator.effects import registry
from agenttask_operator.effects.registry import (
    REGISTRY,
    BuiltinTool,
    ToolContext,
    ToolError,
    builtin_tool,
    load_builtins,
)

OLD = 1_000_000_000  # 2001-09-09
FUTURE = 4_000_000_000  # 2096-10-02

load_builtins()


def ctx(workspace: Path | None, key: str = "uid-1:call_1") -> ToolContext:
    task_uid, _, call_id = key.partition(":")
    return ToolContext(
        idempotency_key=key,
        namespace="ns",
        task_name="task",
        task_uid=task_uid,
        tool_call_id=call_id,
        workspace=workspace,
    )


async def clean_logs(workspace: Path | None, key: str = "uid-1:call_1", **args: Any) -> str:
    return await REGISTRY["clean_logs"].fn(args, ctx(workspace, key))


async def check_disk(workspace: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await REGISTRY["check_disk"].fn({}, ctx(workspace)))
    return out


def put(root: Path, rel: str, size: int = 10, mtime: float = OLD) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    os.utime(p, (mtime, mtime))
    return p


def files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".agenttask" not in p.parts
    }


DELETABLE = [
    "logs/app.log",
    "logs/app.log.1",
    "logs/app.log.12",
    "logs/job.out",
    "logs/old.tar.gz",
    "logs/nested/deep/worker.log",
    "logs/nested/trace.log.3",
]
KEPT_IN_LOGS = [
    "logs/README.txt",
    "logs/app.logger",
    "logs/app.log-config.yaml",
    "logs/output.outfile",
    "logs/gz",
    "logs/nested/settings.json",
]
KEPT_OUTSIDE = ["top.log", "data/keep.log", "data/archive.gz", "other/run.out"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    for i, rel in enumerate(DELETABLE):
        put(root, rel, size=100 * (i + 1))
    for rel in KEPT_IN_LOGS + KEPT_OUTSIDE:
        put(root, rel, size=7)
    return root


# --- registry ----------------------------------------------------------------------------------


def test_bundled_builtins_are_registered() -> None:
    assert {"check_disk", "clean_logs"} <= set(load_builtins())
    for name in ("check_disk", "clean_logs"):
        tool = REGISTRY[name]
        assert tool.name == name
        assert tool.description
        assert tool.parameters["type"] == "object"
    props = REGISTRY["clean_logs"].parameters["properties"]
    assert props["olderThanDays"]["type"] == "number"


def test_registering_a_name_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", {})

    async def one(arguments: dict[str, Any], context: ToolContext) -> str:
        return "one"

    async def two(arguments: dict[str, Any], context: ToolContext) -> str:
        return "two"

    builtin_tool("dup", "first", {})(one)
    builtin_tool("dup", "first again", {})(one)  # the same function again is fine
    with pytest.raises(ValueError, match="registered twice"):
        builtin_tool("dup", "second", {})(two)
    assert registry.REGISTRY["dup"] == BuiltinTool("dup", "first again", {}, one)


# --- clean_logs --------------------------------------------------------------------------------


async def test_clean_logs_deletes_only_log_files_under_logs(ws: Path) -> None:
    result = json.loads(await clean_logs(ws))
    assert files(ws) == set(KEPT_IN_LOGS + KEPT_OUTSIDE)
    assert result["deletedFiles"] == len(DELETABLE)
    assert result["freedBytes"] == sum(100 * (i + 1) for i in range(len(DELETABLE)))
    assert sorted(d["path"] for d in result["deleted"]) == sorted(DELETABLE)
    sizes = {d["path"]: d["bytes"] for d in result["deleted"]}
    assert sizes["logs/app.log"] == 100
    assert isinstance(result["freeBytesNow"], int)


async def test_clean_logs_leaves_directories_alone(ws: Path) -> None:
    (ws / "logs" / "archive.log").mkdir()
    put(ws, "logs/archive.log/inner.txt")
    await clean_logs(ws)
    assert (ws / "logs" / "archive.log").is_dir()
    assert (ws / "logs" / "archive.log" / "inner.txt").is_file()


async def test_clean_logs_is_idempotent_per_key(ws: Path) -> None:
    first = await clean_logs(ws, "uid-1:call_7")
    late = put(ws, "logs/late.log", size=999)
    put(ws, "logs/late.out")
    second = await clean_logs(ws, "uid-1:call_7")
    assert second == first
    assert late.exists()
    assert (ws / "logs" / "late.out").exists()


async def test_clean_logs_same_key_ignores_changed_arguments(ws: Path) -> None:
    first = await clean_logs(ws, "uid-1:call_7", olderThanDays=0)
    put(ws, "logs/late.log")
    assert await clean_logs(ws, "uid-1:call_7", olderThanDays=1) == first
    assert (ws / "logs" / "late.log").exists()


async def test_clean_logs_with_another_key_does_new_work(ws: Path) -> None:
    await clean_logs(ws, "uid-1:call_1")
    late = put(ws, "logs/late.log", size=321)
    result = json.loads(await clean_logs(ws, "uid-1:call_2"))
    assert not late.exists()
    assert result["deletedFiles"] == 1
    assert result["freedBytes"] == 321
    assert result["deleted"] == [{"path": "logs/late.log", "bytes": 321}]


async def test_clean_logs_key_is_per_task(ws: Path) -> None:
    await clean_logs(ws, "uid-1:call_1")
    late = put(ws, "logs/late.log")
    await clean_logs(ws, "uid-2:call_1")  # same tool_call_id, another task
    assert not late.exists()


async def test_clean_logs_second_call_of_an_empty_run_is_still_recorded(tmp_path: Path) -> None:
    first = json.loads(await clean_logs(tmp_path))
    assert (first["deletedFiles"], first["freedBytes"], first["deleted"]) == (0, 0, [])
    put(tmp_path, "logs/new.log")
    assert json.loads(await clean_logs(tmp_path)) == first
    assert (tmp_path / "logs" / "new.log").exists()


async def test_clean_logs_respects_older_than_days(ws: Path) -> None:
    fresh = [put(ws, "logs/fresh.log", mtime=FUTURE), put(ws, "logs/fresh.log.1", mtime=FUTURE)]
    result = json.loads(await clean_logs(ws, olderThanDays=30))
    assert result["deletedFiles"] == len(DELETABLE)
    assert all(p.exists() for p in fresh)
    assert not (ws / "logs" / "app.log").exists()


@pytest.mark.parametrize("days", [0, 0.5, 30, 3650])
async def test_clean_logs_never_deletes_future_files(ws: Path, days: float) -> None:
    fresh = put(ws, "logs/fresh.log", mtime=FUTURE)
    await clean_logs(ws, olderThanDays=days)
    assert fresh.exists()


async def test_clean_logs_very_old_threshold_deletes_nothing(ws: Path) -> None:
    result = json.loads(await clean_logs(ws, olderThanDays=1_000_000))  # ~2700 years
    assert result["deletedFiles"] == 0
    assert files(ws) == set(DELETABLE + KEPT_IN_LOGS + KEPT_OUTSIDE)


async def test_clean_logs_lists_at_most_fifty_files(tmp_path: Path) -> None:
    for i in range(60):
        put(tmp_path, f"logs/f{i:02}.log", size=2)
    result = json.loads(await clean_logs(tmp_path))
    assert result["deletedFiles"] == 60
    assert result["freedBytes"] == 120
    assert len(result["deleted"]) == 50
    assert not list((tmp_path / "logs").iterdir())


@pytest.mark.parametrize("days", [-1, -0.001, "3", None, [], {"n": 1}])
async def test_clean_logs_rejects_bad_older_than_days(ws: Path, days: Any) -> None:
    with pytest.raises(ToolError, match="olderThanDays"):
        await clean_logs(ws, olderThanDays=days)
    assert files(ws) == set(DELETABLE + KEPT_IN_LOGS + KEPT_OUTSIDE)


async def test_clean_logs_rejects_nan_older_than_days(ws: Path) -> None:
    fresh = put(ws, "logs/fresh.log", mtime=FUTURE)
    with pytest.raises(ToolError):
        await clean_logs(ws, olderThanDays=json.loads("NaN"))
    assert fresh.exists()


async def test_clean_logs_without_workspace() -> None:
    with pytest.raises(ToolError, match="no workspace"):
        await clean_logs(None)


async def test_clean_logs_with_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        await clean_logs(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# --- check_disk --------------------------------------------------------------------------------


async def test_check_disk_reports_usage_and_largest_files(ws: Path) -> None:
    put(ws, "big/blob.bin", size=50_000)
    put(ws, ".agenttask/idempotency/huge.json", size=90_000)  # bookkeeping is not reported
    report = await check_disk(ws)
    assert report["workspace"] == str(ws)
    fs = report["filesystem"]
    assert fs["totalBytes"] >= fs["usedBytes"] >= 0
    assert fs["freeBytes"] >= 0
    assert 0 <= fs["usedPercent"] <= 100
    assert report["logsBytes"] == sum(100 * (i + 1) for i in range(len(DELETABLE))) + 7 * len(
        KEPT_IN_LOGS
    )
    largest = report["largestFiles"]
    assert len(largest) == 10
    assert largest[0] == {"path": "big/blob.bin", "bytes": 50_000}
    assert [f["bytes"] for f in largest] == sorted((f["bytes"] for f in largest), reverse=True)
    assert not any(f["path"].startswith(".agenttask") for f in largest)


async def test_check_disk_on_an_empty_workspace(tmp_path: Path) -> None:
    report = await check_disk(tmp_path)
    assert report["logsBytes"] == 0
    assert report["largestFiles"] == []


async def test_check_disk_changes_nothing(ws: Path) -> None:
    before = {p: (ws / p).stat().st_mtime for p in files(ws)}
    await check_disk(ws)
    assert {p: (ws / p).stat().st_mtime for p in files(ws)} == before


async def test_check_disk_after_clean_logs(ws: Path) -> None:
    await clean_logs(ws)
    assert (await check_disk(ws))["logsBytes"] == 7 * len(KEPT_IN_LOGS)


async def test_check_disk_without_workspace() -> None:
    with pytest.raises(ToolError, match="no workspace"):
        await check_disk(None)


async def test_check_disk_with_a_file_as_workspace(tmp_path: Path) -> None:
    not_a_dir = put(tmp_path, "file.txt")
    with pytest.raises(ToolError, match="does not exist"):
        await check_disk(not_a_dir)
