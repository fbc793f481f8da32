"""Credentials and egress: which key reaches which server, and which URLs a task may use.

Real API server, real operator subprocess, real HTTP servers on 127.0.0.1: every assertion is
about what a server actually received (its Authorization header) or what is stored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fakeopenai import FakeServer, Reply, completion, tool_messages
from kubehelpers import create_task, get_task, new_namespace, transcript, wait_phase
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

DEFAULT_KEY = "sk-test-secret-key"  # the operator's OPENAI_API_KEY (tests/operatorproc.py)
TASK_KEY = "sk-task-own-key"
OTHER_NS_KEY = "sk-other-namespace-key"


@pytest.fixture
def other() -> Iterator[FakeServer]:
    """A second model server: "a server of the task author's own"."""
    server = FakeServer().start()
    yield server
    server.stop()


def answer(req: dict[str, Any]) -> Reply:
    """Calls tool ``t`` once when it has it, then answers."""
    if tool_messages(req):
        return completion("done: " + tool_messages(req)[0]["content"])
    if any(t["function"]["name"] == "t" for t in req.get("tools", [])):
        return completion(tool_calls=[("call_t", "t", {})])
    return completion("ok")


async def make_secret(api: client.ApiClient, namespace: str, name: str, key: str) -> None:
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={"apiKey": base64.b64encode(key.encode()).decode()},
        ),
    )


def inputs(server: FakeServer) -> list[str]:
    """The user input of every chat request a server received."""
    return [
        next(m["content"] for m in r["messages"] if m["role"] == "user") for r in server.requests
    ]


def auth_by_input(server: FakeServer) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for text, auth in zip(inputs(server), server.auth_headers, strict=True):
        out.setdefault(text, set()).add(auth)
    return out


async def everything_stored(api: client.ApiClient, namespace: str) -> str:
    """Status of every task, every Event and every transcript of a namespace, as text."""
    co = client.CustomObjectsApi(api)
    tasks = await co.list_namespaced_custom_object(
        "agenttask.dev", "v1alpha1", namespace, "agenttasks"
    )
    parts = [json.dumps(tasks)]
    for t in tasks["items"]:
        parts.append(json.dumps(await transcript(api, namespace, t["metadata"]["uid"])))
    events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    parts += [f"{e.reason} {e.message}" for e in events.items]
    return "\n".join(parts)


async def test_default_key_goes_only_to_the_default_endpoint(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    other: FakeServer,
    operator: OperatorProcess,
) -> None:
    fake.llm = other.llm = answer
    await make_secret(api, namespace, "llm", TASK_KEY)
    ref = {"name": "llm", "key": "apiKey"}
    # OPENAI_ORG_ID and OPENAI_CUSTOM_HEADERS are read by the openai SDK from the environment
    # and sent to any base URL: the operator must keep them for its default endpoint only.
    operator.start(OPENAI_ORG_ID="org-platform", OPENAI_CUSTOM_HEADERS="X-Platform: internal")
    tasks: dict[str, dict[str, Any]] = {
        "default": {},  # no baseURL, no Secret: the operator's endpoint and key
        "default-spelled": {"baseURL": fake.base_url + "/"},
        "own-no-key": {"baseURL": other.base_url},
        "own-secret": {"baseURL": other.base_url, "apiKeySecretRef": ref},
        "default-secret": {"apiKeySecretRef": ref},
    }
    for name, model in tasks.items():
        await create_task(api, namespace, name, {"input": name, "model": {"name": "m", **model}})
    done = {name: await wait_phase(api, namespace, name) for name in tasks}
    assert {n: o["status"]["phase"] for n, o in done.items()} == dict.fromkeys(tasks, "Succeeded")
    credential = {n: o["status"]["model"]["credential"] for n, o in done.items()}
    assert credential == {
        "default": "OperatorDefault",
        "default-spelled": "OperatorDefault",
        "own-no-key": "NoKey",
        "own-secret": "Secret",
        "default-secret": "Secret",
    }
    assert done["own-no-key"]["status"]["model"]["baseURL"] == other.base_url

    # What each server received, by task.
    assert auth_by_input(fake) == {
        "default": {f"Bearer {DEFAULT_KEY}"},
        "default-spelled": {f"Bearer {DEFAULT_KEY}"},
        "default-secret": {f"Bearer {TASK_KEY}"},
    }
    assert auth_by_input(other) == {"own-no-key": {None}, "own-secret": {f"Bearer {TASK_KEY}"}}
    for headers in other.headers:  # nothing of the operator's identity either
        assert "openai-organization" not in headers and "x-platform" not in headers
    org = [h.get("openai-organization") for h, i in zip(fake.headers, inputs(fake), strict=True)]
    assert org.count("org-platform") == 2  # the two tasks using the default key, only

    # No key anywhere in status, events, transcripts or the operator's log.
    stored = await everything_stored(api, namespace) + operator.output()
    for key in (DEFAULT_KEY, TASK_KEY):
        assert key not in stored


async def test_a_secret_of_another_namespace_cannot_be_named(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    other: FakeServer,
    operator: OperatorProcess,
) -> None:
    elsewhere = await new_namespace(api)
    await make_secret(api, elsewhere, "llm", OTHER_NS_KEY)
    other.llm = answer
    operator.start()
    model = {
        "name": "m",
        "baseURL": other.base_url,
        "apiKeySecretRef": {"name": "llm", "key": "apiKey", "namespace": elsewhere},
    }
    spec = {"input": "steal", "model": model, "retry": {"maxAttempts": 1}}
    co = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "agenttask.dev/v1alpha1",
        "kind": "AgentTask",
        "metadata": {"name": "steal"},
        "spec": spec,
    }
    # kubectl's default (strict field validation) refuses the field outright …
    with pytest.raises(ApiException) as refused:
        await co.create_namespaced_custom_object(
            "agenttask.dev", "v1alpha1", namespace, "agenttasks", body, field_validation="Strict"
        )
    assert refused.value.status == 400
    message = json.loads(refused.value.body or "{}")["message"]
    assert 'unknown field "spec.model.apiKeySecretRef.namespace"' in message
    # … and without it the API server drops it: the operator never sees another namespace.
    await create_task(api, namespace, "steal", spec)
    stored = await get_task(api, namespace, "steal")
    assert stored["spec"]["model"]["apiKeySecretRef"] == {"name": "llm", "key": "apiKey"}
    st = (await wait_phase(api, namespace, "steal"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "RetriesExhausted")
    assert f"Secret {namespace}/llm not found" in st["error"]
    assert other.requests == [] and fake.requests == []
    assert OTHER_NS_KEY not in await everything_stored(api, namespace) + operator.output()


async def test_url_allow_list(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    other: FakeServer,
    operator: OperatorProcess,
) -> None:
    fake.llm = other.llm = answer
    other.tools["t"] = lambda call, n: Reply(body="tool ran")

    def tool(url: str) -> dict[str, Any]:
        return {"name": "t", "description": "t", "http": {"url": url}}

    operator.start(AGENTTASK_ALLOWED_HOSTS=f"127.0.0.1:{other.port},*.svc.cluster.local")
    tasks: dict[str, dict[str, Any]] = {
        "allowed": {"baseURL": other.base_url, "tools": [tool(other.tool_url("t"))]},
        # not on the list: another spelling of an allowed host, and the cloud metadata service
        "model-refused": {"baseURL": f"http://localhost:{other.port}/v1"},
        "tool-refused": {"tools": [tool("http://169.254.169.254/latest/meta-data/")]},
        # the operator's own endpoint is always allowed
        "default": {},
    }
    for name, extra in tasks.items():
        model = {"name": "m"} | ({"baseURL": extra["baseURL"]} if "baseURL" in extra else {})
        spec = {"input": name, "model": model, "tools": extra.get("tools", [])}
        await create_task(api, namespace, name, spec)
    done = {name: (await wait_phase(api, namespace, name))["status"] for name in tasks}
    assert done["allowed"]["phase"] == "Succeeded"
    assert done["allowed"]["result"] == "done: tool ran"
    assert done["default"]["phase"] == "Succeeded"
    for name, field in [
        ("model-refused", f"spec.model.baseURL http://localhost:{other.port}/v1"),
        ("tool-refused", "spec.tools[0].http.url http://169.254.169.254/latest/meta-data/"),
    ]:
        st = done[name]
        assert (st["phase"], st["reason"]) == ("Failed", "URLNotAllowed"), st
        assert field in st["error"]
        assert "*.svc.cluster.local" in st["error"]  # says what is allowed
    # Refused before any request: no model server heard of those tasks.
    assert sorted(inputs(fake) + inputs(other)) == ["allowed", "allowed", "default"]
    assert [d.body["task"]["name"] for d in other.deliveries] == ["allowed"]


async def test_builtin_tools_only_in_chosen_namespaces(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = answer
    operator.start(AGENTTASK_BUILTIN_NAMESPACES="ops,platform")
    await create_task(
        api,
        namespace,
        "b",
        {"input": "b", "model": {"name": "m"}, "tools": [{"name": "check_disk"}]},
    )
    await create_task(api, namespace, "plain", {"input": "plain", "model": {"name": "m"}})
    st = (await wait_phase(api, namespace, "b"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "ToolNotAllowed")
    assert "check_disk" in st["error"] and "ops, platform" in st["error"]
    assert (await wait_phase(api, namespace, "plain"))["status"]["phase"] == "Succeeded"
    assert inputs(fake) == ["plain"]
