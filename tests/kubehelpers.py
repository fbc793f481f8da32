"""Small helpers for tests that talk to the local control plane."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float = 30.0, what: str = "condition"
) -> T:
    """Poll the async ``check`` every 0.2 s until it returns a truthy value, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.2)


GROUP, VERSION, PLURAL = "agenttask.dev", "v1alpha1", "agenttasks"


@contextlib.asynccontextmanager
async def api_client(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio client for ``kubeconfig``."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as c:
        yield c


async def new_namespace(api: client.ApiClient) -> str:
    """Create a namespace with a fresh name."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    await client.CoreV1Api(api).create_namespace(body)
    return name


def task_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An AgentTask manifest."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": {"name": name},
        "spec": spec,
    }


async def create_task(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Create an AgentTask."""
    co = client.CustomObjectsApi(api)
    obj: dict[str, Any] = await co.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, task_body(name, spec)
    )
    return obj


async def get_task(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Read an AgentTask."""
    co = client.CustomObjectsApi(api)
    obj: dict[str, Any] = await co.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


async def task_gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Whether AgentTask ``name`` is gone (404)."""
    try:
        await get_task(api, namespace, name)
    except client.ApiException as e:
        return bool(e.status == 404)
    return False


async def wait_phase(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phases: tuple[str, ...] = ("Succeeded", "Failed"),
    *,
    within: float = 60.0,
) -> dict[str, Any]:
    """Wait until the task's status.phase is one of ``phases``; return the object."""

    async def check() -> dict[str, Any] | None:
        obj = await get_task(api, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    try:
        return await eventually(check, within=within, what=f"{name} to reach {phases}")
    except AssertionError:
        obj = await get_task(api, namespace, name)
        raise AssertionError(
            f"{name} never reached {phases}; status: {obj.get('status')}"
        ) from None


async def events_about(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    """The Events about the object called ``name`` in ``namespace``."""
    found = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(found.items)


async def event_reasons(
    api: client.ApiClient, namespace: str, name: str, want: str, *, within: float = 20.0
) -> list[str]:
    """The reasons of the Events about object ``name``, once ``want`` is among them: the
    operator records an Event right after the status write that a test usually waits for.
    """

    async def check() -> list[str] | None:
        reasons = [e.reason for e in await events_about(api, namespace, name)]
        return reasons if want in reasons else None

    return await eventually(check, within=within, what=f"a {want} Event about {name}")


async def settled(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The task once it has ended and kopf has removed its finalizer: nothing changes it."""

    async def check() -> dict[str, Any] | None:
        obj = await get_task(api, namespace, name)
        ended = (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        return obj if ended and not obj["metadata"].get("finalizers") else None

    return await eventually(check, within=120, what=f"{name} to end and settle")


async def transcript(api: client.ApiClient, namespace: str, uid: str) -> list[dict[str, Any]]:
    """The task's transcript, read from its ConfigMaps as a user would."""
    core = client.CoreV1Api(api)
    cms = await core.list_namespaced_config_map(
        namespace, label_selector=f"agenttask.dev/task-uid={uid}"
    )
    stream = "".join(
        (c.data or {}).get("transcript.jsonl", "") for c in transcript_order(cms.items)
    )
    return [json.loads(line) for line in stream.splitlines() if line]


def transcript_order(items: list[Any]) -> list[Any]:
    """Transcript ConfigMaps in log order: an earlier version's chunks, then the segments."""

    def key(cm: Any) -> tuple[int, int]:
        labels = cm.metadata.labels or {}
        if "agenttask.dev/transcript-segment" in labels:
            return (1, int(labels["agenttask.dev/transcript-segment"]))
        return (0, int(labels["agenttask.dev/transcript-chunk"]))

    return sorted(items, key=key)


async def create_object(
    api: client.ApiClient, namespace: str, plural: str, kind: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Create an object of one of our kinds (``agentmodels``/AgentModel …)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    obj: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )
    return obj


async def get_object(
    api: client.ApiClient, namespace: str, plural: str, name: str
) -> dict[str, Any]:
    """Read an object of one of our kinds."""
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return obj


def ready_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's ``Ready`` condition, if it has one."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def kubectl(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the control plane's kubectl against ``cluster`` (a LocalCluster), not checked."""
    return subprocess.run(
        [str(cluster.kubectl), *args],
        env={
            "KUBECONFIG": str(cluster.kubeconfig),
            "PATH": "/usr/bin:/bin",
            "HOME": str(cluster.workdir),
        },
        capture_output=True,
        text=True,
        check=False,
    )
