"""A task deleted and created again under the same name: real API server, real operator.

This is what GitOps does (``kubectl replace --force``, or ``kubectl delete --wait=false`` then
``kubectl create``), and what ``make demo`` does when run twice. The old incarnation's transcript
ConfigMaps live on until the garbage collector removes them; the new incarnation (same name, new
uid) must neither be blocked by them nor touch them, and its transcript holds only its own
entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from fakeopenai import FakeServer, Reply, completion, tool_messages
from kubehelpers import (
    GROUP,
    PLURAL,
    VERSION,
    eventually,
    task_body,
    transcript,
    transcript_order,
    wait_phase,
)
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

NAME = "again"
UID_LABEL = "agenttask.dev/task-uid"
HOLD = "agenttask.dev/test-hold"  # a finalizer of this test: keeps old ConfigMaps from the GC
BLOB = 700_000  # characters of the tool's answer: the transcript spans two ConfigMaps


@dataclass
class Script:
    """The fake model and tool; ``label`` marks what the current incarnation gets."""

    label: str = "first"

    def llm(self, request: dict[str, Any]) -> Reply:
        """A tool call, then an answer; both carry the label of the incarnation asking."""
        if not tool_messages(request):
            return completion(tool_calls=[(f"call_{self.label}", "blob", {})])
        return completion(f"answer of {self.label}")

    def tool(self, call: Any, n: int) -> Reply:
        """A large answer (its toolCallId inside), so the transcript takes several chunks."""
        head = f"blob for {call.body['toolCallId']}: "
        return Reply(body=head + "b" * BLOB)


def spec_for(fake: FakeServer) -> dict[str, Any]:
    """The task's spec: the fake model and its HTTP tool."""
    return {
        "input": "Fetch the blob.",
        "model": {"name": "fake-model"},
        "tools": [{"name": "blob", "description": "blob", "http": {"url": fake.tool_url("blob")}}],
    }


def scripted(fake: FakeServer) -> Script:
    """Point the fake server at a fresh Script."""
    script = Script()
    fake.llm = script.llm
    fake.tools["blob"] = script.tool
    return script


async def create_again(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> str:
    """Create the task as soon as its name is free (as ``kubectl replace --force`` does)."""
    co = client.CustomObjectsApi(api)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            obj = await co.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, task_body(NAME, spec)
            )
        except ApiException as e:
            if e.status != 409 or loop.time() > deadline:  # 409: the old one is still there
                raise
            await asyncio.sleep(0.02)
            continue
        return str(obj["metadata"]["uid"])


async def delete_no_wait(api: client.ApiClient, namespace: str) -> None:
    """``kubectl delete --wait=false``: Background propagation, return at once."""
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        NAME,
        body=client.V1DeleteOptions(propagation_policy="Background"),
    )


@dataclass(frozen=True)
class Seen:
    """One watch event on a ConfigMap, reduced to what incarnations must keep apart."""

    type: str
    name: str
    label_uid: str | None
    owner_uids: tuple[str, ...]
    finalizers: tuple[str, ...]
    data: str  # a digest of .data


def seen(ev: dict[str, Any]) -> Seen:
    """Reduce a watch event."""
    cm = ev["object"]
    data = "".join(f"{k}={v}\n" for k, v in sorted((cm.data or {}).items()))
    return Seen(
        ev["type"],
        cm.metadata.name,
        (cm.metadata.labels or {}).get(UID_LABEL),
        tuple(o.uid for o in cm.metadata.owner_references or []),
        tuple(cm.metadata.finalizers or []),
        hashlib.sha256(data.encode()).hexdigest(),
    )


@contextlib.asynccontextmanager
async def config_map_events(api: client.ApiClient, namespace: str) -> AsyncIterator[list[Seen]]:
    """Record every ConfigMap event in ``namespace`` while the block runs."""
    events: list[Seen] = []
    started = asyncio.Event()

    async def record() -> None:
        async with watch.Watch().stream(
            client.CoreV1Api(api).list_namespaced_config_map, namespace, timeout_seconds=600
        ) as stream:
            started.set()
            async for ev in stream:
                events.append(seen(ev))

    recorder = asyncio.create_task(record())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.3)
    try:
        yield events
    finally:
        await asyncio.sleep(1)  # let the last events arrive
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder


def check_never_mixed(events: list[Seen]) -> None:
    """Every transcript ConfigMap is owned by the uid it is labelled with; no name is shared."""
    chunks = [e for e in events if e.label_uid is not None]
    assert chunks, "no transcript ConfigMap was seen"
    by_name: dict[str, set[str]] = {}
    for e in chunks:
        assert e.owner_uids == (e.label_uid,), e
        by_name.setdefault(e.name, set()).add(e.label_uid or "")
    shared = {name: uids for name, uids in by_name.items() if len(uids) > 1}
    assert not shared, f"ConfigMap names used by several incarnations: {shared}"


async def chunk_maps(api: client.ApiClient, namespace: str, uid: str) -> list[Any]:
    """The ConfigMaps labelled with ``uid``, in log order."""
    cms = await client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=f"{UID_LABEL}={uid}"
    )
    return transcript_order(cms.items)


async def check_incarnation(
    api: client.ApiClient, namespace: str, uid: str, label: str
) -> list[str]:
    """The incarnation ``uid`` succeeded with only its own entries; returns its ConfigMaps."""
    obj = await wait_phase(api, namespace, NAME)
    st = obj["status"]
    assert obj["metadata"]["uid"] == uid
    assert st["phase"] == "Succeeded", st
    assert st["result"] == f"answer of {label}"
    entries = await transcript(api, namespace, uid)
    assert [e["kind"] for e in entries] == ["LLM", "Tool", "LLM"]
    assert entries[0]["message"]["tool_calls"][0]["id"] == f"call_{label}"
    assert entries[1]["toolCallId"] == f"call_{label}"
    assert entries[1]["message"]["content"].startswith(f"blob for call_{label}: ")
    assert entries[2]["message"]["content"] == f"answer of {label}"
    cms = await chunk_maps(api, namespace, uid)
    assert len(cms) >= 2
    names = [c.metadata.name for c in cms]
    assert st["transcript"]["segments"] == len(names)  # status counts the real ConfigMaps
    assert st["transcript"]["entries"] == 3
    for cm in cms:
        [owner] = cm.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("AgentTask", NAME, uid)
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.uid={uid}"
    )
    reasons = [e.reason for e in events.items]
    assert "Retrying" not in reasons, [e.message for e in events.items]
    return names


async def test_recreated_at_once_while_the_old_transcript_is_still_there(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    script = scripted(fake)
    spec = spec_for(fake)
    operator.start()
    core = client.CoreV1Api(api)
    async with config_map_events(api, namespace) as events:
        old_uid = await create_again(api, namespace, spec)
        old_names = await check_incarnation(api, namespace, old_uid, "first")
        # Keep the old ConfigMaps through the whole test, however fast the GC: this is the
        # window in which the new incarnation used to collide with them.
        before: dict[str, Any] = {}
        for name in old_names:
            cm = await core.patch_namespaced_config_map(
                name,
                namespace,
                {"metadata": {"finalizers": [HOLD]}},
                _content_type="application/merge-patch+json",
            )
            before[name] = (cm.data, cm.metadata.labels, cm.metadata.owner_references)

        await delete_no_wait(api, namespace)
        script.label = "second"
        new_uid = await create_again(api, namespace, spec)
        assert new_uid != old_uid
        new_names = await check_incarnation(api, namespace, new_uid, "second")
        assert not set(new_names) & set(old_names)

        for name in old_names:  # still there, and untouched by the new incarnation
            cm = await core.read_namespaced_config_map(name, namespace)
            assert (cm.data, cm.metadata.labels, cm.metadata.owner_references) == before[name]
            assert cm.metadata.owner_references[0].uid == old_uid

    check_never_mixed(events)
    for name in old_names:  # from the hold on (the first incarnation had ended), no change
        mine = [e for e in events if e.name == name]
        assert {e.label_uid for e in mine} == {old_uid}
        held = next(i for i, e in enumerate(mine) if HOLD in e.finalizers)
        assert {e.data for e in mine[held:]} == {mine[held].data}, name

    # Let go: the garbage collector removes the old incarnation's ConfigMaps, not the new ones.
    for name in old_names:
        await core.patch_namespaced_config_map(
            name,
            namespace,
            {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json",
        )

    async def old_gone() -> bool:
        return not await chunk_maps(api, namespace, old_uid)

    await eventually(old_gone, within=60, what="the old ConfigMaps to be collected")
    assert [c.metadata.name for c in await chunk_maps(api, namespace, new_uid)] == new_names


async def test_recreated_twice_in_a_row(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """Like running ``make demo`` twice, then once more: no hold, the GC races the operator."""
    script = scripted(fake)
    spec = spec_for(fake)
    operator.start()
    incarnations: list[tuple[str, list[str]]] = []
    async with config_map_events(api, namespace) as events:
        for label in ("first", "second", "third"):
            if incarnations:
                await delete_no_wait(api, namespace)
            script.label = label
            uid = await create_again(api, namespace, spec)
            incarnations.append((uid, await check_incarnation(api, namespace, uid, label)))
    check_never_mixed(events)
    uids = [uid for uid, _ in incarnations]
    assert len(set(uids)) == 3
    names = [set(n) for _, n in incarnations]
    assert not (names[0] & names[1]) and not (names[1] & names[2]) and not (names[0] & names[2])

    async def only_the_last_left() -> bool:
        left = {uid for uid in uids if await chunk_maps(api, namespace, uid)}
        return left == {uids[-1]}

    await eventually(only_the_last_left, within=60, what="the GC to remove the older ConfigMaps")
