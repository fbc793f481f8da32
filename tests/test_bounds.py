"""Every number of the spec has bounds, and the API server refuses what lies beyond them.

The fields and their bounds are read from the CRD in crds/ (which ``models.limits`` mirrors, see
tests/unit/test_properties.py), so a new number in the schema is tested here as soon as it
exists. Each value out of range is refused with a message that names the field; values at the
bounds are accepted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crdschema import SPEC_SCHEMA, numbers_of
from kubehelpers import GROUP, PLURAL, VERSION, task_body

pytestmark = pytest.mark.cluster

SCHEMA = SPEC_SCHEMA

GOOD: dict[str, Any] = {"input": "hello", "model": {"name": "m"}}
# What a list item or object needs besides the number under test.
REQUIRED: dict[str, dict[str, Any]] = {
    "tools[]": {"name": "t"},
    "tools[].http": {"url": "http://tool.invalid/"},
    "forkFrom": {"name": "source"},
}


NUMBERS = dict(numbers_of(SCHEMA))


def with_value(spec: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """``spec`` with ``value`` at ``path`` (the first item of a list), and the field's name."""
    out = copy.deepcopy(spec)
    *parents, leaf = path.split(".")
    node, so_far = out, ""
    for part in parents:
        so_far = f"{so_far}.{part}" if so_far else part
        key = part.removesuffix("[]")
        if part.endswith("[]"):
            items = node.setdefault(key, [])
            if not items:
                items.append(copy.deepcopy(REQUIRED.get(so_far, {})))
            node = items[0]
        else:
            node = node.setdefault(key, copy.deepcopy(REQUIRED.get(so_far, {})))
    node[leaf] = value
    return out


def field_name(path: str) -> str:
    """How the API server names the field in its messages."""
    return "spec." + path.replace("[]", "[0]")


def beyond(path: str) -> Iterator[Any]:
    """Cases ``(path, value, expected message)`` just past each bound of ``path``."""
    schema, name = NUMBERS[path], field_name(path)
    over = f"{name} in body should be less than or equal to"
    under = f"{name} in body should be greater than or equal to"
    if "maximum" in schema:  # a number without one fails test_every_number_…_has_bounds
        yield pytest.param(path, schema["maximum"] + 1, over, id=f"{path}>max")
        if schema["type"] == "number":
            yield pytest.param(path, schema["maximum"] + 0.5, over, id=f"{path}>max+0.5")
    if "minimum" in schema:
        yield pytest.param(path, schema["minimum"] - 1, under, id=f"{path}<min")


CASES = [case for path in NUMBERS for case in beyond(path)]


async def create(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    """Create (server-side dry run: validated, never stored) a task with ``spec``."""
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, task_body("bounds", spec), dry_run="All"
    )


def test_every_number_of_the_spec_has_bounds() -> None:
    assert NUMBERS
    assert [p for p, s in NUMBERS.items() if "maximum" not in s or "minimum" not in s] == []


@pytest.mark.parametrize(("path", "value", "expected"), CASES)
async def test_a_number_beyond_its_bounds_is_refused_naming_the_field(
    api: client.ApiClient, namespace: str, crd: Path, path: str, value: object, expected: str
) -> None:
    with pytest.raises(ApiException) as err:
        await create(api, namespace, with_value(GOOD, path, value))
    assert err.value.status == 422
    assert expected in json.loads(err.value.body or "{}")["message"]


@pytest.mark.parametrize("bound", ["minimum", "maximum"])
async def test_every_number_at_its_bound_is_accepted(
    api: client.ApiClient, namespace: str, crd: Path, bound: str
) -> None:
    spec = GOOD
    for path, schema in NUMBERS.items():
        spec = with_value(spec, path, schema.get(bound, 0))
    await create(api, namespace, spec)


async def test_the_ttl_of_the_bug_report_is_refused(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    with pytest.raises(ApiException) as err:
        await create(api, namespace, GOOD | {"ttlSecondsAfterFinished": 1099511627776})
    message = json.loads(err.value.body or "{}")["message"]
    assert "spec.ttlSecondsAfterFinished in body should be less than or equal to" in message
