"""AgentToolServer against the real API server, the operator subprocess and real MCP servers.

server-everything's tools (with their annotations and protocol version) land in status;
toolFilter applies; a header from a Secret reaches the server (the ledger server records the
requests it gets) and goes nowhere else; an unreachable server is Ready=False and retried; a URL
off the allow-list is refused before any connection; a missing Secret (or key) is reported and
picked up once it exists; a tool the ledger server adds (and announces) lands in status at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import LocalCluster, free_port

from agenttask_operator.core.toolserver import schema_digest
from agenttask_operator.effects import mcp
from kubehelpers import (
    GROUP,
    VERSION,
    create_object,
    event_reasons,
    events_about,
    eventually,
    get_object,
    kubectl,
    ready_of,
)
from mcpservers import LedgerServer, ServerProcess
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

PLURAL = "agenttoolservers"
TOKEN = "mcp-token-do-not-leak-4b1d8e"


async def create_server(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return await create_object(api, namespace, PLURAL, "AgentToolServer", name, spec)


async def get_server(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await get_object(api, namespace, PLURAL, name)


async def wait_ready(
    api: client.ApiClient,
    namespace: str,
    name: str,
    status: str,
    reason: str,
    *,
    generation: int = 1,
    within: float = 30,
) -> dict[str, Any]:
    """Wait for ``Ready=status`` with ``reason`` at ``generation``; return the object."""

    async def check() -> dict[str, Any] | None:
        obj = await get_server(api, namespace, name)
        cond = ready_of(obj)
        seen = (obj.get("status") or {}).get("observedGeneration")
        wanted = (status, reason, generation)
        return obj if cond and (cond["status"], cond["reason"], seen) == wanted else None

    try:
        return await eventually(check, within=within, what=f"{name} Ready={status} {reason}")
    except AssertionError:
        obj = await get_server(api, namespace, name)
        raise AssertionError(f"{name}: status {obj.get('status')}") from None


async def make_secret(
    api: client.ApiClient, namespace: str, name: str, data: dict[str, str]
) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    )


async def test_server_everything_tools_land_in_status(
    api: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    everything: ServerProcess,
) -> None:
    operator.start()
    await create_server(api, namespace, "everything", {"url": everything.url})
    obj = await wait_ready(api, namespace, "everything", "True", "Discovered")
    status = obj["status"]
    assert status["protocolVersion"] == "2025-11-25"
    assert status["serverInfo"] == {"name": "mcp-servers/everything", "version": "2.0.0"}
    tools = {t["name"]: t for t in status["tools"]}
    assert status["toolCount"] == len(tools) >= 10
    listed = {t.name: t for t in (await mcp.list_tools(everything.url, {}, 30)).tools}
    assert set(tools) == set(listed)
    assert tools["echo"] == {
        "name": "echo",
        "description": listed["echo"].description,
        "inputSchemaDigest": schema_digest(listed["echo"].input_schema),
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    }
    assert tools["echo"]["inputSchemaDigest"].startswith("sha256:")
    assert status["lastRefreshTime"]
    cond = ready_of(obj)
    assert cond is not None
    assert cond["observedGeneration"] == 1
    assert "(protocol 2025-11-25)" in cond["message"]
    assert await event_reasons(api, namespace, "everything", "Discovered") == ["Discovered"]

    async def told() -> bool:
        return "everything: the server does not announce tool changes" in operator.output()

    await eventually(told, within=10, what="the log line on change notifications")

    table = kubectl(cluster, "get", "atsrv", "-n", namespace)
    assert table.returncode == 0, table.stderr
    head, row = table.stdout.splitlines()[:2]
    assert head.split() == ["NAME", "URL", "TOOLS", "READY", "AGE"]
    assert row.split()[:4] == ["everything", everything.url, str(len(tools)), "True"]

    patch = {
        "spec": {"toolFilter": {"include": ["echo", "get-sum", "nope"], "exclude": ["get-sum"]}}
    }
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "everything", patch,
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    obj = await wait_ready(api, namespace, "everything", "True", "Discovered", generation=2)
    assert [t["name"] for t in obj["status"]["tools"]] == ["echo"]
    assert obj["status"]["toolCount"] == 1
    cond = ready_of(obj)
    assert cond is not None
    assert "does not offer: nope" in cond["message"]
    assert cond["lastTransitionTime"] <= obj["status"]["lastRefreshTime"]


async def test_a_header_from_a_secret_reaches_the_server_and_nothing_else(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    ledger: LedgerServer,
) -> None:
    operator.start()
    await make_secret(api, namespace, "mcp", {"token": TOKEN})
    spec = {
        "url": ledger.url,
        "headersFrom": [
            {"name": "Authorization", "secretKeyRef": {"name": "mcp", "key": "token"},
             "prefix": "Bearer "},
        ],
    }  # fmt: skip
    await create_server(api, namespace, "ledger", spec)
    obj = await wait_ready(api, namespace, "ledger", "True", "Discovered")
    assert obj["status"]["protocolVersion"] == "2026-07-28"
    tools = {t["name"]: t for t in obj["status"]["tools"]}
    assert (tools["apply_change"]["destructiveHint"], tools["apply_change"]["idempotentHint"]) == (
        True,
        False,
    )
    assert tools["read_ledger"]["readOnlyHint"] is True
    sent = ledger.request_log()
    assert sent
    assert {r["headers"].get("authorization") for r in sent} == {f"Bearer {TOKEN}"}
    assert ledger.entries() == []  # discovery lists; it never calls a tool

    servers = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    all_events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    visible = "\n".join(
        [json.dumps(servers), *(f"{e.reason} {e.message}" for e in all_events.items)]
    )
    for text in (visible, operator.output()):
        assert TOKEN not in text
        assert base64.b64encode(TOKEN.encode()).decode() not in text


async def test_an_announced_tool_change_is_refreshed_at_once(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    ledger: LedgerServer,
) -> None:
    operator.start()
    await create_server(api, namespace, "live", {"url": ledger.url, "refreshSeconds": 3600})
    obj = await wait_ready(api, namespace, "live", "True", "Discovered")
    assert obj["status"]["protocolVersion"] == "2026-07-28"
    assert "fresh" not in {t["name"] for t in obj["status"]["tools"]}

    async def listening() -> bool:
        return "live: the server announces tool changes (protocol 2026-07-28)" in operator.output()

    await eventually(listening, within=15, what="the operator listens for tool changes")
    await asyncio.sleep(1)  # the refresh that follows the acknowledgment is done
    added = await mcp.call_tool(ledger.url, {}, 30, "add_tool", {"name": "fresh"}, "t:add")
    assert not added.is_error

    async def landed() -> dict[str, Any] | None:
        obj = await get_server(api, namespace, "live")
        return obj if "fresh" in {t["name"] for t in obj["status"]["tools"]} else None

    # refreshSeconds is an hour: anything sooner is the server's notification at work.
    obj = await eventually(landed, within=20, what="the new tool in status.tools")
    assert obj["status"]["toolCount"] == len(obj["status"]["tools"])

    async def announced() -> list[str]:
        found = await events_about(api, namespace, "live")
        return [e.message for e in found if e.reason == "ToolsChanged"]

    assert await eventually(announced, within=20, what="a ToolsChanged Event") == ["added: fresh"]


async def test_a_missing_secret_then_a_missing_key_then_ready(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    ledger: LedgerServer,
) -> None:
    operator.start()
    ref = {"name": "later", "key": "token"}
    spec = {"url": ledger.url, "headersFrom": [{"name": "X-Api-Key", "secretKeyRef": ref}]}
    await create_server(api, namespace, "later", spec)
    obj = await wait_ready(api, namespace, "later", "False", "SecretNotFound")
    cond = ready_of(obj)
    assert cond is not None
    assert cond["message"] == f"Secret {namespace}/later (header X-Api-Key) not found"
    assert "tools" not in obj["status"]
    assert obj["status"]["toolCount"] == 0
    assert ledger.request_log() == []  # no request without the header

    await make_secret(api, namespace, "later", {"other": "x"})
    await wait_ready(api, namespace, "later", "False", "KeyNotFound")
    assert ledger.request_log() == []

    secret = {"data": {"token": base64.b64encode(TOKEN.encode()).decode()}}
    await client.CoreV1Api(api).patch_namespaced_secret("later", namespace, secret)
    await wait_ready(api, namespace, "later", "True", "Discovered", within=40)
    assert {r["headers"].get("x-api-key") for r in ledger.request_log()} == {TOKEN}
    reasons = sorted(await event_reasons(api, namespace, "later", "Discovered"))
    assert reasons == ["Discovered", "KeyNotFound", "SecretNotFound"]  # one per change


async def test_an_unreachable_server_is_not_ready_and_retried(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
) -> None:
    operator.start()
    url = f"http://127.0.0.1:{free_port()}/mcp"
    await create_server(api, namespace, "down", {"url": url, "timeoutSeconds": 5})
    obj = await wait_ready(api, namespace, "down", "False", "ServerUnavailable")
    cond = ready_of(obj)
    assert cond is not None
    assert "connection error" in cond["message"]
    assert url in cond["message"]
    times = {obj["status"]["lastRefreshTime"]}

    async def retried() -> bool:
        times.add((await get_server(api, namespace, "down"))["status"]["lastRefreshTime"])
        return len(times) >= 3

    await eventually(retried, within=20, what="two more tries")
    again = await get_server(api, namespace, "down")
    assert ready_of(again) == cond | {"message": ready_of(again)["message"]}  # type: ignore[index]
    warnings = [
        e for e in await events_about(api, namespace, "down") if e.reason == "ServerUnavailable"
    ]
    assert len(warnings) == 1  # one Event per change, not one per try

    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "down"
    )

    async def gone() -> bool:
        try:
            await get_server(api, namespace, "down")
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(gone, within=20, what="the deleted AgentToolServer to go (finalizer removed)")


async def test_a_url_off_the_allow_list_is_refused_without_connecting(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    ledger: LedgerServer,
    everything: ServerProcess,
) -> None:
    allowed = everything.url.split("/")[2]  # 127.0.0.1:<port> of server-everything only
    operator.start(AGENTTASK_ALLOWED_HOSTS=f"tools.example.com,{allowed}")
    await create_server(api, namespace, "refused", {"url": ledger.url})
    await create_server(api, namespace, "allowed", {"url": everything.url})
    obj = await wait_ready(api, namespace, "refused", "False", "URLNotAllowed")
    cond = ready_of(obj)
    assert cond is not None
    assert ledger.url in cond["message"]
    assert "no connection was made" in cond["message"]
    await wait_ready(api, namespace, "allowed", "True", "Discovered")
    await asyncio.sleep(2)  # a refused URL is not retried: it waits for a change
    assert ledger.request_log() == []
    refused = (await get_server(api, namespace, "refused"))["status"]
    assert refused["lastRefreshTime"] == obj["status"]["lastRefreshTime"]

    operator.stop()  # restarted without the list: the verdict changed, so it is looked at now
    operator.start()
    await wait_ready(api, namespace, "refused", "True", "Discovered", within=20)
    assert ledger.request_log()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"url": "ftp://x/mcp"}, "spec.url"),
        ({"url": "http://x/mcp", "refreshSeconds": 1}, "spec.refreshSeconds"),
        ({"url": "http://x/mcp", "timeoutSeconds": 86401}, "spec.timeoutSeconds"),
        ({"url": "http://x/mcp", "tools": [{"name": "t", "approval": "Maybe"}]}, "approval"),
        (
            {"url": "http://x/mcp", "tools": [{"name": "t", "onUnknownOutcome": "Retry"}]},
            "onUnknownOutcome",
        ),
        (
            {"url": "http://x/mcp",
             "headersFrom": [{"name": "Host", "secretKeyRef": {"name": "s", "key": "k"}}]},
            "set by the operator or the MCP transport",
        ),
        (
            {"url": "http://x/mcp",
             "headersFrom": [{"name": "A B", "secretKeyRef": {"name": "s", "key": "k"}}]},
            "spec.headersFrom[0].name",
        ),
        (
            {"url": "http://x/mcp", "headersFrom": [
                {"name": "X", "secretKeyRef": {"name": "s", "key": "k", "namespace": "other"}}]},
            "namespace",
        ),
    ],
)  # fmt: skip
async def test_the_crd_refuses_bad_input(
    api: client.ApiClient, namespace: str, crd: Path, spec: dict[str, Any], says: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentToolServer",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    co = client.CustomObjectsApi(api)
    if "namespace" in json.dumps(spec):  # unknown fields are refused only when asked to be
        with pytest.raises(ApiException) as refused:
            await co.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
            )
    else:
        with pytest.raises(ApiException) as refused:
            await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert refused.value.status in (400, 422)
    assert says in str(refused.value.body), refused.value.body


async def test_the_crd_accepts_a_full_spec_with_defaults(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    spec = {
        "url": "https://tools.example.com/mcp",
        "headersFrom": [
            {"name": "Authorization", "secretKeyRef": {"name": "s", "key": "k"},
             "prefix": "Bearer "},
        ],
        "toolFilter": {"include": ["a", "b"], "exclude": ["b"]},
        "tools": [
            {"name": "a", "approval": "Required", "idempotent": False,
             "onUnknownOutcome": "AskApproval"},
        ],
    }  # fmt: skip
    obj = await create_server(api, namespace, "full", spec)
    assert obj["spec"]["timeoutSeconds"] == 30
    assert obj["spec"]["refreshSeconds"] == 300
