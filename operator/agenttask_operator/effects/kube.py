"""The only module that calls the Kubernetes API (through kubernetes_asyncio).

Status writes are merge patches to ``/status`` that carry ``metadata.resourceVersion``: the API
server applies them only if the object is unchanged since we read it, else answers 409, which
surfaces here as :class:`Conflict` (the caller re-reads and decides again).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from yarl import URL

from agenttask_operator.models.agentmodel import SecretLookup

GROUP, VERSION, PLURAL, KIND = "agenttask.dev", "v1alpha1", "agenttasks", "AgentTask"
MERGE = "application/merge-patch+json"
USER_AGENT = "agenttask-operator"
FINALIZER = f"{GROUP}/finalizer"  # kopf's, on every task with a loop

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and decide again."""


class AlreadyExists(Exception):
    """An object of that name exists already (HTTP 409 on create)."""


def is_transient(exc: BaseException) -> bool:
    """An API server answer worth retrying: 429 (e.g. storage initialising) or 5xx."""
    return isinstance(exc, ApiException) and (exc.status == 429 or (exc.status or 0) >= 500)


class SecretError(Exception):
    """A model credential could not be read from its Secret."""


async def connect() -> client.ApiClient:
    """An API client from the in-cluster service account, else from ``KUBECONFIG``."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=cfg)
    api = client.ApiClient(cfg)
    api.user_agent = USER_AGENT  # the API server's audit log and metrics tell our requests apart
    resolve_proxy_once(api, cfg.host)
    return api


def resolve_proxy_once(api: client.ApiClient, host: str) -> None:
    """Read the proxy settings (``HTTPS_PROXY``, ``NO_PROXY``, ~/.netrc) once, not per request.

    kubernetes_asyncio's session trusts the environment, so aiohttp looks up the proxy and the
    netrc file for every request, in a thread of the default executor: two thread hops and a
    file read per API call. The answer cannot change while the operator runs, so it is taken
    once here and given to the client; the per-request lookup is switched off.
    """
    rest = api.rest_client
    try:
        proxy, auth = get_env_proxy_for_url(URL(host))
    except LookupError:
        proxy, auth = None, None
    if proxy is not None and not rest.proxy:
        rest.proxy = str(proxy)
        if auth is not None:
            rest.proxy_headers = {"Proxy-Authorization": auth.encode()}
    rest.pool_manager._trust_env = False  # no per-request lookup (aiohttp has no setter)


async def raise_for_status(resp: Any) -> None:
    """Raise ApiException for a raw (not preloaded) answer that is not a success."""
    if not 200 <= resp.status <= 299:
        exc = ApiException(status=resp.status, reason=resp.reason)
        exc.body = (await resp.read()).decode(errors="replace")
        raise exc


async def read_json(resp: Any) -> dict[str, Any]:
    """An unparsed answer's JSON body, after checking its status."""
    try:
        await raise_for_status(resp)
        return cast(dict[str, Any], json.loads(await resp.read()))
    finally:
        resp.release()


SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def service_account_namespace() -> str | None:
    """The namespace of the Pod's service account, in a cluster (None elsewhere)."""
    try:
        return SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class Kube:
    """Typed, small surface over the API calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        """Wrap an API client."""
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The AgentTask as stored now, or None if it is gone."""
        return await self.get_object(PLURAL, namespace, name)

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object of another of our kinds (``agentmodels`` …), or None if there is none."""
        try:
            obj = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def list_objects(
        self, plural: str, namespace: str, field_selector: str = "", label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """The objects of one of our kinds in ``namespace`` (server-side selectors)."""
        found = await self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            field_selector=field_selector,
            label_selector=label_selector,
        )
        return cast(list[dict[str, Any]], found.get("items") or [])

    async def create_object(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create an object of one of our kinds; one of that name exists → AlreadyExists."""
        try:
            obj = await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
        except ApiException as e:
            if e.status == 409:
                raise AlreadyExists(f"{plural} {namespace}/{body['metadata']['name']}") from None
            raise
        return cast(dict[str, Any], obj)

    async def patch_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` if the object is still at ``resource_version``."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            obj = await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE
            )
        except ApiException as e:
            if e.status in (404, 409):
                raise Conflict(f"{namespace}/{name}: {e.reason}") from None
            raise
        return cast(dict[str, Any], obj)

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete the task if it is still the one with ``uid``; its ConfigMaps go with it (GC)."""
        body = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid), propagation_policy="Background"
        )
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body=body
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded. Never logged."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found") from None
            if e.status == 403:
                raise SecretError(f"not allowed to read Secret {namespace}/{name}") from None
            raise
        data = secret.data or {}
        if key not in data:
            raise SecretError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode().strip()

    async def secret_lookup(self, namespace: str, name: str, key: str) -> SecretLookup:
        """Whether a Secret exists, may be read, and has a non-empty ``key``; never the value.

        Other API errors (429, 5xx, …) are raised: the caller keeps what it knew and retries.
        """
        lookup, _ = await self.secret_value(namespace, name, key)
        return lookup

    # --- ConfigMaps (transcript chunks) ---

    async def list_config_maps(
        self, namespace: str, selector: str, page: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """ConfigMaps matching a label selector, as JSON objects, ``page`` per request."""
        token = None
        while True:
            resp = await self.core.list_namespaced_config_map(
                namespace, label_selector=selector, limit=page, _continue=token,
                _preload_content=False,
            )  # fmt: skip
            try:
                await raise_for_status(resp)
                found = json.loads(await resp.read())
            finally:
                resp.release()
            for item in found.get("items") or ():
                yield item
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        """Create. Exists already → Conflict. The answer is not parsed (nothing in it is used:
        parsing it into the client's models cost more CPU than the request itself).
        """  # noqa: D205
        resp = await self.core.create_namespaced_config_map(namespace, body, _preload_content=False)
        try:
            if resp.status == 409:
                raise Conflict(f"ConfigMap {body['metadata']['name']} exists")
            await raise_for_status(resp)
        finally:
            resp.release()

    async def replace_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        """Replace if unchanged since read (``metadata.resourceVersion``), else Conflict."""
        name = body["metadata"]["name"]
        try:
            cm = await self.core.replace_namespaced_config_map(name, namespace, body)
        except ApiException as e:
            if e.status in (404, 409):
                raise Conflict(f"ConfigMap {name}: {e.reason}") from None
            raise
        return str(cm.metadata.resource_version)

    async def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete, ignoring absence."""
        try:
            await self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    # --- Leases: the replicas' membership (effects.lease) ---

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The Leases in ``namespace`` matching a label selector, as JSON objects."""
        resp = await self.coordination.list_namespaced_lease(
            namespace, label_selector=selector, _preload_content=False
        )
        return cast(list[dict[str, Any]], (await read_json(resp)).get("items") or [])

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a JSON object, or None if there is none."""
        resp = await self.coordination.read_namespaced_lease(
            name, namespace, _preload_content=False
        )
        if resp.status == 404:
            resp.release()
            return None
        return await read_json(resp)

    async def write_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease (no ``metadata.resourceVersion``) or replace it if unchanged since
        read (with one); Conflict if it exists already, changed, or is gone.
        """  # noqa: D205
        name = body["metadata"]["name"]
        if body["metadata"].get("resourceVersion"):
            resp = await self.coordination.replace_namespaced_lease(
                name, namespace, body, _preload_content=False
            )
        else:
            resp = await self.coordination.create_namespaced_lease(
                namespace, body, _preload_content=False
            )
        if resp.status in (404, 409):
            resp.release()
            raise Conflict(f"Lease {name}: HTTP {resp.status}")
        return await read_json(resp)

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        """Delete the Lease if unchanged since ``resource_version``; gone or changed: nothing."""
        body = {"preconditions": {"resourceVersion": resource_version}}
        resp = await self.coordination.delete_namespaced_lease(
            name, namespace, body=body, _preload_content=False
        )
        try:
            if resp.status not in (404, 409):
                await raise_for_status(resp)
        finally:
            resp.release()

    async def event(
        self, task: dict[str, Any], type_: str, reason: str, message: str, now_iso: str
    ) -> None:
        """Record a Kubernetes Event on the task (best effort: failures are logged only)."""
        await self.object_event({"kind": KIND} | task, type_, reason, message, now_iso)

    # --- AgentToolServer (added with MCP support) ---

    async def secret_value(
        self, namespace: str, name: str, key: str
    ) -> tuple[SecretLookup, str | None]:
        """One key of a Secret, decoded and stripped, or why not (then None). Never logged.

        Other API errors (429, 5xx, …) are raised: the caller keeps what it knew and retries.
        """
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return SecretLookup.NOT_FOUND, None
            if e.status == 403:
                return SecretLookup.FORBIDDEN, None
            raise
        data = secret.data or {}
        if key not in data:
            return SecretLookup.NO_KEY, None
        value = base64.b64decode(data[key]).decode(errors="replace").strip()
        if not value:
            return SecretLookup.EMPTY, None
        return SecretLookup.FOUND, value

    async def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch ``status`` of a custom object of this group (last writer wins); None
        when the object is gone.
        """  # noqa: D205
        try:
            obj = await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}, _content_type=MERGE
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def object_event(
        self, obj: dict[str, Any], type_: str, reason: str, message: str, now_iso: str
    ) -> None:
        """Record a Kubernetes Event on any object of ours (``obj`` has apiVersion and kind)."""
        meta = obj["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "agenttask-operator"},
            "firstTimestamp": now_iso,
            "lastTimestamp": now_iso,
            "count": 1,
            "reportingComponent": "agenttask.dev/operator",
        }
        try:
            resp = await self.core.create_namespaced_event(
                meta["namespace"], body, _preload_content=False
            )
            try:
                await raise_for_status(resp)
            finally:
                resp.release()
        except ApiException as e:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], e.reason)
