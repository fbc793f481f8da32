"""AgentModel against the real API server and the operator subprocess.

Readiness follows the Secret (found, missing then created, without the key, edited), nothing is
written while nothing changes, the key's value goes nowhere, ``kubectl get`` shows the printer
columns, and the CRD refuses numbers out of range with a message that names the field.
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
from localcluster import LocalCluster

from kubehelpers import GROUP, VERSION, create_object, eventually, get_object, kubectl, ready_of
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

PLURAL = "agentmodels"
KEY_VALUE = "sk-agentmodel-do-not-leak-7f3a9c"
FAST = {"AGENTTASK_AGENTMODEL_RECHECK_SECONDS": "0.5"}
REF = {"name": "llm", "key": "apiKey"}


async def create_model(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return await create_object(api, namespace, PLURAL, "AgentModel", name, spec)


async def get_model(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await get_object(api, namespace, PLURAL, name)


async def wait_ready(
    api: client.ApiClient, namespace: str, name: str, status: str, reason: str, within: float = 30
) -> dict[str, Any]:
    """Wait for ``Ready=status`` with ``reason``; return the object."""

    async def check() -> dict[str, Any] | None:
        obj = await get_model(api, namespace, name)
        cond = ready_of(obj)
        return obj if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    try:
        return await eventually(check, within=within, what=f"{name} Ready={status} {reason}")
    except AssertionError:
        obj = await get_model(api, namespace, name)
        raise AssertionError(f"{name}: status {obj.get('status')}") from None


async def make_secret(
    api: client.ApiClient, namespace: str, data: dict[str, str], name: str = "llm"
) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    )


async def everything_visible(
    api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> str:
    """Every AgentModel (status included), every Event of the namespace, and the operator log."""
    models = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    parts = [json.dumps(models), *(f"{e.reason} {e.message}" for e in events.items)]
    return "\n".join([*parts, operator.output()])


async def test_ready_with_a_secret_that_has_the_key_and_no_write_while_steady(
    api: client.ApiClient, namespace: str, crd: Path, operator: OperatorProcess
) -> None:
    await make_secret(api, namespace, {"apiKey": KEY_VALUE})
    operator.start(**FAST)
    await create_model(
        api, namespace, "shared",
        {"model": "gpt-4o-mini", "baseURL": "https://llm.example/v1", "apiKeySecretRef": REF},
    )  # fmt: skip
    obj = await wait_ready(api, namespace, "shared", "True", "SecretFound")
    cond = ready_of(obj)
    assert cond is not None
    assert cond["message"] == f"Secret {namespace}/llm has the key 'apiKey'"
    generation = obj["metadata"]["generation"]
    assert obj["status"]["observedGeneration"] == cond["observedGeneration"] == generation
    assert cond["lastTransitionTime"]

    async def kopf_done() -> str | None:  # its finalizer, then the spec it handled: its last write
        meta = (await get_model(api, namespace, "shared"))["metadata"]
        handled = f"{GROUP}/last-handled-configuration" in (meta.get("annotations") or {})
        return meta["resourceVersion"] if handled and meta.get("finalizers") else None

    before = await eventually(kopf_done, within=30, what="kopf's bookkeeping after the create")
    # The timer re-checks every 0.5 s: several checks, and not one write.
    await asyncio.sleep(3.0)
    after = await get_model(api, namespace, "shared")
    assert after["metadata"]["resourceVersion"] == before, after
    assert KEY_VALUE not in await everything_visible(api, namespace, operator)


async def test_a_secret_created_later_turns_it_ready_without_an_edit(
    api: client.ApiClient, namespace: str, crd: Path, operator: OperatorProcess
) -> None:
    operator.start(**FAST)
    await create_model(api, namespace, "later", {"model": "m", "apiKeySecretRef": REF})
    obj = await wait_ready(api, namespace, "later", "False", "SecretNotFound")
    cond = ready_of(obj)
    assert cond is not None and cond["message"] == f"Secret {namespace}/llm not found"
    await make_secret(api, namespace, {"apiKey": KEY_VALUE})
    ready = await wait_ready(api, namespace, "later", "True", "SecretFound", within=15)
    assert ready["metadata"]["generation"] == obj["metadata"]["generation"]  # never edited
    ready_cond = ready_of(ready)
    assert ready_cond is not None
    assert ready_cond["lastTransitionTime"] >= cond["lastTransitionTime"]
    # … and back, when the Secret goes away.
    await client.CoreV1Api(api).delete_namespaced_secret("llm", namespace)
    await wait_ready(api, namespace, "later", "False", "SecretNotFound", within=15)
    assert KEY_VALUE not in await everything_visible(api, namespace, operator)


async def test_key_not_found_then_the_key_is_added(
    api: client.ApiClient, namespace: str, crd: Path, operator: OperatorProcess
) -> None:
    await make_secret(api, namespace, {"other": KEY_VALUE})
    operator.start(**FAST)
    await create_model(api, namespace, "nokey", {"model": "m", "apiKeySecretRef": REF})
    obj = await wait_ready(api, namespace, "nokey", "False", "KeyNotFound")
    cond = ready_of(obj)
    assert cond is not None and cond["message"] == f"Secret {namespace}/llm has no key 'apiKey'"
    await client.CoreV1Api(api).patch_namespaced_secret(
        "llm", namespace, {"stringData": {"apiKey": KEY_VALUE}}
    )
    await wait_ready(api, namespace, "nokey", "True", "SecretFound", within=15)
    assert KEY_VALUE not in await everything_visible(api, namespace, operator)


async def test_no_secret_ref_is_ready_and_deletion_works(
    api: client.ApiClient, namespace: str, crd: Path, operator: OperatorProcess
) -> None:
    operator.start()
    await create_model(
        api, namespace, "local", {"model": "llama", "baseURL": "http://ollama:11434/v1"}
    )
    obj = await wait_ready(api, namespace, "local", "True", "NoSecret")
    cond = ready_of(obj)
    assert cond is not None and "no apiKeySecretRef" in cond["message"]
    # The re-check timer puts kopf's finalizer on every AgentModel; deleting one still just works.
    assert obj["metadata"]["finalizers"] == ["agenttask.dev/finalizer"]
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "local"
    )

    async def gone() -> bool:
        try:
            await get_model(api, namespace, "local")
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(gone, within=15, what="the AgentModel to be deleted")


async def test_a_spec_edit_is_checked_at_once_and_a_restart_catches_up(
    api: client.ApiClient, namespace: str, crd: Path, operator: OperatorProcess
) -> None:
    # The default interval (60 s): what happens here is the update and resume handlers' work.
    await make_secret(api, namespace, {"apiKey": KEY_VALUE})
    operator.start()
    await create_model(api, namespace, "edited", {"model": "m", "apiKeySecretRef": REF})
    await wait_ready(api, namespace, "edited", "True", "SecretFound")
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "edited",
        {"spec": {"apiKeySecretRef": {"key": "missing"}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    obj = await wait_ready(api, namespace, "edited", "False", "KeyNotFound", within=15)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    # Fixed while the operator is down: noticed when it starts again (resume), not a minute later.
    operator.stop()
    await client.CoreV1Api(api).patch_namespaced_secret(
        "llm", namespace, {"stringData": {"missing": KEY_VALUE}}
    )
    operator.start()
    await wait_ready(api, namespace, "edited", "True", "SecretFound", within=20)
    assert KEY_VALUE not in await everything_visible(api, namespace, operator)


async def test_kubectl_get_shows_the_printer_columns(
    api: client.ApiClient,
    namespace: str,
    crd: Path,
    operator: OperatorProcess,
    cluster: LocalCluster,
) -> None:
    await make_secret(api, namespace, {"apiKey": KEY_VALUE})
    operator.start()
    await create_model(
        api, namespace, "shared",
        {"model": "gpt-4o-mini", "baseURL": "https://llm.example/v1", "apiKeySecretRef": REF},
    )  # fmt: skip
    await create_model(
        api,
        namespace,
        "missing",
        {
            "model": "other",
            "baseURL": "http://ollama:11434/v1",
            "apiKeySecretRef": {"name": "nope", "key": "k"},
        },
    )
    await wait_ready(api, namespace, "shared", "True", "SecretFound")
    await wait_ready(api, namespace, "missing", "False", "SecretNotFound")
    proc = kubectl(cluster, "get", "agentmodels", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    header, *rows = [line.split() for line in proc.stdout.splitlines()]
    assert header == ["NAME", "MODEL", "BASEURL", "READY", "AGE"]
    by_name = {r[0]: r for r in rows}
    assert by_name["shared"][1:4] == ["gpt-4o-mini", "https://llm.example/v1", "True"]
    assert by_name["missing"][1:4] == ["other", "http://ollama:11434/v1", "False"]
    wide = kubectl(cluster, "get", "am", "-n", namespace, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    assert wide.stdout.split("\n")[0].split() == [
        "NAME",
        "MODEL",
        "BASEURL",
        "READY",
        "AGE",
        "REASON",
    ]
    assert "SecretNotFound" in wide.stdout


LE, GE = "should be less than or equal to", "should be greater than or equal to"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "spec.model: Required value"),
        ({"model": ""}, "spec.model in body should be at least 1 chars long"),
        ({"model": "m", "temperature": 2.5}, f"spec.temperature in body {LE} 2"),
        ({"model": "m", "temperature": -0.1}, f"spec.temperature in body {GE} 0"),
        ({"model": "m", "maxTokens": 0}, f"spec.maxTokens in body {GE} 1"),
        ({"model": "m", "maxTokens": 10_000_001}, f"spec.maxTokens in body {LE} 10000000"),
        ({"model": "m", "maxTokens": 1.5}, "spec.maxTokens in body must be of type integer"),
        ({"model": "m", "requestTimeoutSeconds": 0}, f"spec.requestTimeoutSeconds in body {GE} 1"),
        (
            {"model": "m", "requestTimeoutSeconds": 86_401},
            f"spec.requestTimeoutSeconds in body {LE} 86400",
        ),
        ({"model": "m", "baseURL": "ftp://x"}, "spec.baseURL in body should match '^https?://'"),
        (
            {"model": "m", "apiKeySecretRef": {"name": "s"}},
            "spec.apiKeySecretRef.key: Required value",
        ),
    ],
)
async def test_crd_refuses_bad_input_naming_the_field(
    api: client.ApiClient, namespace: str, crd: Path, spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiException) as err:
        await create_model(api, namespace, "bad", spec)
    assert err.value.status == 422
    assert expected in json.loads(err.value.body or "{}")["message"]


async def test_crd_accepts_the_bounds_and_refuses_a_secret_namespace(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    for i, (t, m, r) in enumerate([(0, 1, 1), (2, 10_000_000, 86_400)]):
        spec = {"model": "m", "temperature": t, "maxTokens": m, "requestTimeoutSeconds": r}
        await create_model(api, namespace, f"ok{i}", spec)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentModel",
        "metadata": {"name": "steal"},
        "spec": {"model": "m", "apiKeySecretRef": REF | {"namespace": "elsewhere"}},
    }
    with pytest.raises(ApiException) as refused:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    assert refused.value.status == 400
    message = json.loads(refused.value.body or "{}")["message"]
    assert 'unknown field "spec.apiKeySecretRef.namespace"' in message
