"""How tasks end, and how tool errors go back to the model — real server, real operator."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import FakeServer, Reply, completion, error, tool_messages
from kubehelpers import create_task, transcript, wait_phase
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster


def http_tool(fake: FakeServer, name: str = "t") -> dict[str, Any]:
    return {"name": name, "description": name, "http": {"url": fake.tool_url(name)}}


async def test_max_iterations_exceeded(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: completion(tool_calls=[(f"c{len(req['messages'])}", "t", {})])
    fake.tools["t"] = lambda call, n: Reply(body="again")
    operator.start()
    spec = {"input": "loop", "model": {"name": "m"}, "tools": [http_tool(fake)], "maxIterations": 2}
    await create_task(api, namespace, "loop", spec)
    st = (await wait_phase(api, namespace, "loop"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "MaxIterationsExceeded")
    assert "maxIterations=2" in st["error"]
    assert len(fake.requests) == 2
    assert st["iterations"] == 2


async def test_unknown_builtin_fails_before_any_llm_call(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    operator.start()
    spec = {"input": "x", "model": {"name": "m"}, "tools": [{"name": "no_such_tool"}]}
    await create_task(api, namespace, "unknown", spec)
    st = (await wait_phase(api, namespace, "unknown"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "UnknownTool")
    assert "no_such_tool" in st["error"]
    assert "check_disk" in st["error"]  # says what exists
    assert fake.requests == []


async def test_tool_errors_go_back_to_the_model(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """Invalid JSON arguments, an unknown tool name and a 4xx become error tool messages."""

    def model(req: dict[str, Any]) -> Reply:
        if not tool_messages(req):
            return completion(
                tool_calls=[
                    ("bad_json", "t", "{not json"),
                    ("ghost", "nope", {}),
                    ("four04", "t", {"q": 1}),
                ]
            )
        return completion("recovered: " + " | ".join(m["content"][:40] for m in tool_messages(req)))

    fake.llm = model
    fake.tools["t"] = lambda call, n: Reply(status=404, body="no such item")
    operator.start()
    spec = {"input": "x", "model": {"name": "m"}, "tools": [http_tool(fake)]}
    await create_task(api, namespace, "errs", spec)
    obj = await wait_phase(api, namespace, "errs")
    assert obj["status"]["phase"] == "Succeeded"
    contents = [m["content"] for m in tool_messages(fake.requests[-1])]
    assert contents[0].startswith("error: arguments are not valid JSON")
    assert contents[1].startswith("error: unknown tool 'nope'; available tools: t")
    assert contents[2] == "error: HTTP 404 from tool t: no such item"
    assert len(fake.deliveries) == 1  # only the valid call reached the tool
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [e.get("isError", False) for e in entries if e["kind"] == "Tool"] == [True, True, True]


async def test_permanent_llm_error_fails_at_once(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: error(401, "Incorrect API key provided")
    operator.start()
    await create_task(api, namespace, "auth", {"input": "x", "model": {"name": "m"}})
    st = (await wait_phase(api, namespace, "auth"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "ModelAuthFailed")
    assert "Incorrect API key provided" in st["error"]
    assert len(fake.requests) == 1


async def test_api_key_from_secret(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    def model(req: dict[str, Any]) -> Reply:
        return completion("ok")

    fake.llm = model
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="llm"),
            data={"apiKey": base64.b64encode(b"sk-from-secret").decode()},
        ),
    )
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m", "apiKeySecretRef": {"name": "llm", "key": "apiKey"}},
    }
    await create_task(api, namespace, "sec", spec)
    obj = await wait_phase(api, namespace, "sec")
    assert obj["status"]["phase"] == "Succeeded"
    assert fake.auth_headers[-1] == "Bearer sk-from-secret"
    assert "sk-from-secret" not in operator.output() + json.dumps(obj)


async def test_three_mib_transcript(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    big = "é" * 600_000  # 1.2 MB of UTF-8 per tool answer (2-byte characters across chunk edges)

    def model(req: dict[str, Any]) -> Reply:
        if not tool_messages(req):
            return completion(tool_calls=[(f"big{i}", "t", {"i": i}) for i in range(3)])
        sizes = [len(m["content"]) for m in tool_messages(req)]
        return completion(f"got {sizes}")

    fake.llm = model
    fake.tools["t"] = lambda call, n: Reply(body=big)
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "tools": [http_tool(fake)],
        "toolResultMaxChars": 1_000_000,  # the model sees each whole result
    }
    await create_task(api, namespace, "big", spec)
    obj = await wait_phase(api, namespace, "big", within=120)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["result"] == "got [600000, 600000, 600000]"
    assert st["transcript"]["bytes"] > 3 * 1024 * 1024
    assert st["transcript"]["segments"] >= 7  # 600,000-character results take 2 segments each
    assert len(json.dumps(obj)) < 16 * 1024  # status stays small
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [len(e["message"]["content"] or "") for e in entries if e["kind"] == "Tool"] == [
        600_000
    ] * 3
    core = client.CoreV1Api(api)
    cms = await core.list_namespaced_config_map(
        namespace, label_selector=f"agenttask.dev/task-uid={obj['metadata']['uid']}"
    )
    assert len(cms.items) == st["transcript"]["segments"]
    for cm in cms.items:
        assert cm.immutable is True
        assert len(cm.data["transcript.jsonl"].encode()) <= 512 * 1024
        assert cm.metadata.owner_references[0].uid == obj["metadata"]["uid"]
