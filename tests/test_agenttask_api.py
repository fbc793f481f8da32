"""The AgentTask API as the API server enforces it: bad input is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehelpers import GROUP, PLURAL, VERSION, create_task, get_task

pytestmark = pytest.mark.cluster

GOOD: dict[str, Any] = {"input": "hello", "model": {"name": "m"}}


async def refused(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as err:
        await create_task(api, namespace, "bad", spec)
    assert err.value.status == 422
    message: str = json.loads(err.value.body or "{}")["message"]
    return message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"model": {"name": "m"}}, "spec.input: Required value"),
        (
            {"input": "", "model": {"name": "m"}},
            "spec.input in body should be at least 1 chars long",
        ),
        ({"input": "x"}, "spec.model: Required value"),
        (
            GOOD | {"maxIterations": -1},
            "spec.maxIterations in body should be greater than or equal to 1",
        ),
        (
            GOOD | {"maxIterations": "ten"},
            'spec.maxIterations in body must be of type integer: "string"',
        ),
        (GOOD | {"input": ["a"]}, 'spec.input in body must be of type string: "array"'),
        (GOOD | {"tools": [{"name": "has space"}]}, "spec.tools[0].name in body should match"),
        (
            GOOD | {"tools": [{"name": "t", "http": {"url": "ftp://x"}}]},
            "spec.tools[0].http.url in body should match",
        ),
        (
            GOOD | {"tools": [{"name": "t"}, {"name": "t"}]},
            'spec.tools[1]: Duplicate value: {"name":"t"}',
        ),
    ],
)
async def test_bad_input_is_refused_with_a_clear_message(
    api: client.ApiClient, namespace: str, crd: Path, spec: dict[str, Any], expected: str
) -> None:
    assert expected in await refused(api, namespace, spec)


async def test_defaults_are_applied(api: client.ApiClient, namespace: str, crd: Path) -> None:
    await create_task(api, namespace, "d", GOOD)
    spec = (await get_task(api, namespace, "d"))["spec"]
    assert spec["maxIterations"] == 10
    assert spec["stepTimeoutSeconds"] == 120


async def test_spec_is_immutable_once_started(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    co = client.CustomObjectsApi(api)
    await create_task(api, namespace, "t", GOOD)
    # Not started yet: the spec may still change.
    await co.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "t", {"spec": {"input": "changed"}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    await co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "t", {"status": {"startTime": "2026-01-01T00:00:00Z"}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    with pytest.raises(ApiException) as err:
        await co.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "t", {"spec": {"input": "again"}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert err.value.status == 422
    assert (
        "spec is immutable once the task has started"
        in json.loads(err.value.body or "{}")["message"]
    )


async def test_printer_columns(api: client.ApiClient, crd: Path) -> None:
    ext = client.ApiextensionsV1Api(api)
    crd_obj = await ext.read_custom_resource_definition("agenttasks.agenttask.dev")
    cols = crd_obj.spec.versions[0].additional_printer_columns
    assert [(c.name, c.priority or 0) for c in cols] == [
        ("Phase", 0), ("Iterations", 0), ("Tokens", 0), ("Attempts", 0), ("Age", 0),
        ("Reason", 1), ("Model", 1), ("Owner", 1),
    ]  # fmt: skip
    assert crd_obj.spec.names.short_names == ["at"]
