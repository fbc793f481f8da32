"""No key and no ``Authorization`` value anywhere a user or a log pipeline can read: the
operator's log at debug level, the tasks' status, Events and transcripts.

Real API server, real operator subprocess (``-v``, JSON lines), real MCP server (our ledger).
Keys are distinctive strings, looked for as such and base64-encoded (as a Secret holds them).
The failing request matters most: a model server's 401 may quote the key it refused, and error
messages are what the operator stores and logs.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import FakeServer, Reply, completion, error, tool_messages
from kubehelpers import create_object, wait_phase
from mcpservers import LedgerServer
from operatorproc import OperatorProcess
from test_logs import served
from test_security import everything_stored, make_secret

pytestmark = pytest.mark.cluster

RUN = uuid.uuid4().hex[:12]
DEFAULT_KEY = f"sk-operator-default-{RUN}"
TASK_KEY = f"sk-task-secret-{RUN}"
REFUSED_KEY = f"sk-refused-{RUN}"
MCP_TOKEN = f"mcp-bearer-{RUN}"


def model(request: dict[str, Any], auth: str | None) -> Reply:
    """401 quoting the key for REFUSED_KEY (as some gateways do); otherwise one MCP call when
    the task has the ledger's tool, then an answer.
    """
    if auth == f"Bearer {REFUSED_KEY}":
        return error(401, f"Incorrect API key provided: {REFUSED_KEY}. Authorization: {auth}")
    if tool_messages(request):
        return completion("done")
    if any(t["function"]["name"] == "read_ledger" for t in request.get("tools", [])):
        return completion(tool_calls=[("call_r", "read_ledger", {})])
    return completion("ok")


def variants(*secrets: str) -> list[str]:
    return [v for s in secrets for v in (s, base64.b64encode(s.encode()).decode())]


async def test_keys_and_authorization_values_appear_nowhere(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    auth_of: dict[str, str | None] = {}

    def llm(request: dict[str, Any]) -> Reply:
        auth = fake.auth_headers[-1]
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        auth_of[user] = auth
        return model(request, auth)

    fake.llm = llm
    await make_secret(api, namespace, "llm", TASK_KEY)
    await make_secret(api, namespace, "refused", REFUSED_KEY)
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="mcp"),
            data={"token": base64.b64encode(MCP_TOKEN.encode()).decode()},
        ),
    )
    await served(api, namespace)
    operator.start("-v", AGENTTASK_LOG_FORMAT="json", OPENAI_API_KEY=DEFAULT_KEY)
    header = {"name": "Authorization", "secretKeyRef": {"name": "mcp", "key": "token"}}
    await create_object(
        api, namespace, "agenttoolservers", "AgentToolServer", "ledger",
        {"url": ledger.url, "headersFrom": [header | {"prefix": "Bearer "}]},
    )  # fmt: skip
    ledger_tool = {"name": "ledger", "toolServerRef": {"name": "ledger", "tools": ["read_ledger"]}}
    tasks: dict[str, dict[str, Any]] = {
        "default": {"model": {"name": "m"}},
        "secret": {"model": {"name": "m", "apiKeySecretRef": {"name": "llm", "key": "apiKey"}}},
        "refused": {
            "model": {"name": "m", "apiKeySecretRef": {"name": "refused", "key": "apiKey"}}
        },
        "mcp": {"model": {"name": "m"}, "tools": [ledger_tool]},
    }
    for name, spec in tasks.items():
        await create_object(
            api, namespace, "agenttasks", "AgentTask", name, {"input": name, **spec}
        )
    done = {name: await wait_phase(api, namespace, name, within=90) for name in tasks}
    phases = {n: (o["status"]["phase"], o["status"].get("reason")) for n, o in done.items()}
    assert phases == {
        "default": ("Succeeded", "Completed"),
        "secret": ("Succeeded", "Completed"),
        "refused": ("Failed", "ModelAuthFailed"),
        "mcp": ("Succeeded", "Completed"),
    }
    # Each key really went where it belongs (or the test would prove nothing).
    assert auth_of == {
        "default": f"Bearer {DEFAULT_KEY}",
        "secret": f"Bearer {TASK_KEY}",
        "refused": f"Bearer {REFUSED_KEY}",
        "mcp": f"Bearer {DEFAULT_KEY}",
    }
    assert f"Bearer {MCP_TOKEN}" in {
        r["headers"].get("authorization") for r in ledger.request_log()
    }
    error = done["refused"]["status"]["error"]
    assert "Incorrect API key provided: [redacted]" in error  # kept, without the key

    stored = await everything_stored(api, namespace)
    log = operator.output()
    assert '"level": "DEBUG"' in log  # debug lines were written, and searched
    for secret in variants(DEFAULT_KEY, TASK_KEY, REFUSED_KEY, MCP_TOKEN):
        assert secret not in stored, secret
        assert secret not in log, [line for line in log.splitlines() if secret in line][:3]
