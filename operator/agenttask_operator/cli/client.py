"""The API as ``kubectl agenttask`` sees it: a client configured the way kubectl is, and reads.

**Configuration** follows kubectl: ``--kubeconfig``, else ``KUBECONFIG`` (a list of files,
merged), else ``~/.kube/config``, else the in-cluster service account; ``--context`` picks a
context; the namespace is ``-n``, else the context's, else ``default``.

**Reads** go through ``effects.kube.Kube`` where it has them, and the transcript is read with
the operator's own ``effects.transcript.TranscriptStore``, so the plugin sees exactly the
committed entries the operator does (torn writes skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from agenttask_operator.effects.kube import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    raise_for_status,
    read_json,
    resolve_proxy_once,
    service_account_namespace,
)
from agenttask_operator.effects.transcript import UID_LABEL, TranscriptStore
from agenttask_operator.models import Entry

USER_AGENT = "kubectl-agenttask"


class CliError(Exception):
    """What to print on stderr (as is) before exiting 1."""


def not_found(name: str, resource: str = f"{PLURAL}.{GROUP}") -> CliError:
    """kubectl's wording for an object that does not exist."""
    return CliError(f'Error from server (NotFound): {resource} "{name}" not found')


def from_server(e: ApiException) -> CliError:
    """An API server's refusal in kubectl's wording: ``Error from server (Reason): message``."""
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        body = {}
    text = e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")
    reason = body.get("reason") or e.reason or f"HTTP {e.status}"
    message = body.get("message") or text.strip() or str(e.reason)
    return CliError(f"Error from server ({reason}): {message}")


@dataclass
class Target:
    """Where to work: the API client and the namespace commands default to."""

    api: client.ApiClient
    namespace: str
    host: str


def _config_files(kubeconfig: str | None) -> str | None:
    """The kubeconfig path list kubectl would use, or None if no file of it exists."""
    paths = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().exists()]
    if kubeconfig and not existing:
        raise CliError(f"Error: stat {kubeconfig}: no such file or directory")
    return os.pathsep.join(existing) if existing else None


async def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Target:
    """An API client configured like kubectl, and the namespace to use."""
    cfg = client.Configuration()
    files = _config_files(kubeconfig)
    default_ns = "default"
    if files is not None:
        try:
            loader = await config.load_kube_config(
                config_file=files, context=context, client_configuration=cfg, persist_config=False
            )
        except config.ConfigException as e:
            if context is not None and f"name {context} in" in str(e):
                raise CliError(f'error: context "{context}" does not exist') from None
            raise CliError(f"Error: {e}") from None
        ctx = loader.current_context
        ns = (ctx.get("context") or {}).get("namespace") if isinstance(ctx, dict) else None
        default_ns = ns or default_ns
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            raise CliError(
                "Error: no configuration has been provided, try setting KUBECONFIG"
            ) from None
        default_ns = service_account_namespace() or default_ns
    api = client.ApiClient(cfg)
    api.user_agent = USER_AGENT
    resolve_proxy_once(api, cfg.host)
    return Target(api, namespace or default_ns, cfg.host)


class Reader:
    """The reads and writes of the plugin, on one API client."""

    def __init__(self, api: client.ApiClient) -> None:
        """Wrap an API client."""
        self.kube = Kube(api)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.auth = client.AuthenticationV1Api(api)

    async def task(self, namespace: str, name: str) -> dict[str, Any]:
        """The AgentTask, or kubectl's NotFound error."""
        obj = await self.kube.get_task(namespace, name)
        if obj is None:
            raise not_found(name)
        return obj

    async def tasks(self, namespace: str | None) -> list[dict[str, Any]]:
        """The AgentTasks of ``namespace`` (None: of every namespace), by namespace and name."""
        if namespace is None:
            found = await self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            items = cast(list[dict[str, Any]], found.get("items") or [])
        else:
            items = await self.kube.list_objects(PLURAL, namespace)
        return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    async def config_maps(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """The transcript ConfigMaps of ``task`` (by its uid), as JSON."""
        meta = task["metadata"]
        found = self.kube.list_config_maps(meta["namespace"], f"{UID_LABEL}={meta['uid']}")
        return [cm async for cm in found]

    async def transcript(
        self, task: dict[str, Any], items: list[dict[str, Any]] | None = None
    ) -> tuple[Entry, ...]:
        """The committed entries of ``task``'s transcript, read as the operator reads them."""
        meta = task["metadata"]
        store = TranscriptStore(self.kube, meta["namespace"], meta["name"], meta["uid"])
        return await store.load(items if items is not None else await self.config_maps(task))

    async def events(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """The Events of this task (this uid); none if they may not be read."""
        meta = task["metadata"]
        selector = f"involvedObject.name={meta['name']},involvedObject.kind=AgentTask"
        resp = await self.core.list_namespaced_event(
            meta["namespace"], field_selector=selector, _preload_content=False
        )
        if resp.status == 403:
            resp.release()
            return []
        found = await read_json(resp)
        items = found.get("items") or []
        return [e for e in items if (e.get("involvedObject") or {}).get("uid") == meta["uid"]]

    async def whoami(self) -> str:
        """The user name the API server knows us by (``kubectl auth whoami``)."""
        review = await self.auth.create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        return str(review.status.user_info.username)

    async def create(
        self, plural: str, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Create an object of ours; unknown fields are an error, never silently dropped."""
        extra = {"dry_run": "All"} if dry_run else {}
        obj = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body, field_validation="Strict", **extra
        )
        return cast(dict[str, Any], obj)


async def watch(
    fetch: Any, *args: Any, resource_version: str, **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """The events (``{"type", "object"}`` as JSON) of one watch request from
    ``resource_version``, until the server ends it. Lines of any length (a transcript segment
    holds up to 512 KiB).
    """  # noqa: D205
    resp = await fetch(
        *args,
        watch=True,
        resource_version=resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=300,
        _preload_content=False,
        **kwargs,
    )
    try:
        await raise_for_status(resp)
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
    finally:
        resp.release()


class Mirror:
    """A list of objects kept current by a watch (list, then watch from its resourceVersion;
    list again when the watch's history is gone): ``changed`` is set at every change.
    """  # noqa: D205

    def __init__(self, fetch: Any, *args: Any, **kwargs: Any) -> None:
        """``fetch``: a list function of the API (``list_namespaced_config_map`` …)."""
        self.fetch, self.args, self.kwargs = fetch, args, kwargs
        self.objects: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.error: BaseException | None = None

    async def _list(self) -> str:
        resp = await self.fetch(*self.args, _preload_content=False, **self.kwargs)
        found = await read_json(resp)
        self.objects = {o["metadata"]["name"]: o for o in found.get("items") or []}
        self.changed.set()
        return str((found.get("metadata") or {}).get("resourceVersion", ""))

    async def run(self) -> None:
        """Keep :attr:`objects` current until cancelled; a failure is kept in :attr:`error`."""
        try:
            rv = await self._list()
            while True:
                try:
                    async for ev in watch(
                        self.fetch, *self.args, resource_version=rv, **self.kwargs
                    ):
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            raise ApiException(status=int(obj.get("code") or 500))
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if ev.get("type") == "BOOKMARK":
                            continue
                        name = obj["metadata"]["name"]
                        if ev.get("type") == "DELETED":
                            self.objects.pop(name, None)
                        else:
                            self.objects[name] = obj
                        self.changed.set()
                except ApiException as e:
                    if e.status != 410:  # 410 Gone: the history is compacted; list again
                        raise
                    rv = await self._list()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self.error = e
            self.changed.set()
