"""AgentTask.spec.model.modelRef: a shared AgentModel, used as a whole, fixed when the task starts.

Real API server, real operator subprocess, real HTTP model servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fakeopenai import FakeServer, Reply, completion
from kubehelpers import create_object, create_task, wait_phase
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

KEY = "sk-shared-model-key"


@pytest.fixture
def gateway() -> Iterator[FakeServer]:
    """The endpoint an AgentModel names (not the operator's default)."""
    server = FakeServer().start()
    yield server
    server.stop()


async def agent_model(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    await create_object(api, namespace, "agentmodels", "AgentModel", "shared", spec)


async def test_a_task_uses_an_agent_model_as_a_whole(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    gateway: FakeServer,
    operator: OperatorProcess,
) -> None:
    seen: list[dict[str, Any]] = []

    def model(req: dict[str, Any]) -> Reply:
        seen.append(req)
        return completion("shared ok")

    gateway.llm = model
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="gw"),
            data={"token": base64.b64encode(KEY.encode()).decode()},
        ),
    )
    await agent_model(
        api,
        namespace,
        {
            "model": "big-model",
            "baseURL": gateway.base_url,
            "apiKeySecretRef": {"name": "gw", "key": "token"},
            "temperature": 0.3,
            "maxTokens": 99,
        },
    )
    operator.start()
    spec = {"input": "hi", "model": {"modelRef": {"name": "shared"}, "maxTokens": 7}}
    await create_task(api, namespace, "uses-ref", spec)
    obj = await wait_phase(api, namespace, "uses-ref")
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["result"] == "shared ok"
    assert st["model"] == {"baseURL": gateway.base_url, "credential": "Secret"}
    assert st["resolvedModel"] == {
        "name": "big-model",
        "baseURL": gateway.base_url,
        "apiKeySecretRef": {"name": "gw", "key": "token"},
        "temperature": 0.3,
        "maxTokens": 7,  # the task's override wins over the AgentModel's default
    }
    assert gateway.auth_headers == [f"Bearer {KEY}"]
    assert (seen[0]["model"], seen[0]["temperature"], seen[0]["max_tokens"]) == (
        "big-model",
        0.3,
        7,
    )
    assert fake.requests == []  # the operator's default endpoint was never asked
    assert KEY not in json.dumps(obj) + operator.output()


async def test_a_model_ref_to_nothing_fails_naming_it(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    operator.start()
    await create_task(
        api, namespace, "dangling", {"input": "x", "model": {"modelRef": {"name": "nope"}}}
    )
    st = (await wait_phase(api, namespace, "dangling"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "AgentModelNotFound")
    assert f"AgentModel {namespace}/nope not found" in st["error"]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "complaint"),
    [
        ({"modelRef": {"name": "shared"}, "baseURL": "http://mine/v1"}, "remove baseURL"),
        ({"modelRef": {"name": "shared"}, "apiKeySecretRef": {"name": "s", "key": "k"}}, "remove"),
        ({"modelRef": {"name": "shared"}, "name": "m"}, "exactly one"),
        ({}, "exactly one"),
    ],
)
async def test_the_api_refuses_a_model_ref_mixed_with_inline_fields(
    api: client.ApiClient, namespace: str, crd: Any, model: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ApiException) as refused:
        await create_task(api, namespace, "mixed", {"input": "x", "model": model})
    assert refused.value.status == 422
    assert complaint in json.loads(refused.value.body or "{}")["message"]
