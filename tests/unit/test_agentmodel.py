"""Unit tests of the AgentModel kind: readiness, its status patch, ``resolve``, CRD and bounds."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agenttask_operator.core.agentmodel import Readiness, readiness, resolve, status_patch
from agenttask_operator.effects.kube import Kube
from agenttask_operator.handlers.agentmodel import (
    DEFAULT_RECHECK_SECONDS,
    RECHECK_ENV,
    recheck_seconds,
)
from agenttask_operator.models import ModelSpec, SecretKeyRef, limits
from agenttask_operator.models.agentmodel import (
    AgentModelSpec,
    AgentModelStatus,
    ModelOverrides,
    SecretLookup,
)

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "agenttask.dev_agentmodels.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
TASK_MODEL_SCHEMA = yaml.safe_load((REPO / "crds" / "agenttask.dev_agenttasks.yaml").read_text())[
    "spec"
]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 3, 1, 12, 5, 30, tzinfo=UTC)
REF = SecretKeyRef(name="openai", key="apiKey")
WITH_REF = AgentModelSpec(model="m", api_key_secret_ref=REF)


# --- readiness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookup", "ready", "reason", "message"),
    [
        (SecretLookup.FOUND, True, "SecretFound", "Secret ns/openai has the key 'apiKey'"),
        (SecretLookup.NOT_FOUND, False, "SecretNotFound", "Secret ns/openai not found"),
        (SecretLookup.NO_KEY, False, "KeyNotFound", "Secret ns/openai has no key 'apiKey'"),
        (SecretLookup.EMPTY, False, "KeyNotFound", "Secret ns/openai has an empty key 'apiKey'"),
        (
            SecretLookup.FORBIDDEN,
            False,
            "SecretForbidden",
            "the operator is not allowed to read Secret ns/openai",
        ),
    ],
)
def test_readiness_follows_the_secret(
    lookup: SecretLookup, ready: bool, reason: str, message: str
) -> None:
    assert readiness("ns", WITH_REF, lookup) == Readiness(ready, reason, message)


def test_no_secret_ref_is_ready_without_reading_anything() -> None:
    r = readiness("ns", AgentModelSpec(model="m", baseURL="http://llm.local/v1"), None)
    assert (r.ready, r.reason) == (True, "NoSecret")
    assert "no apiKeySecretRef" in r.message


def test_a_secret_ref_needs_a_lookup() -> None:
    with pytest.raises(ValueError, match="lookup"):
        readiness("ns", WITH_REF, None)


# --- status_patch ------------------------------------------------------------------------------

FOUND = Readiness(True, "SecretFound", "Secret ns/openai has the key 'apiKey'")
MISSING = Readiness(False, "SecretNotFound", "Secret ns/openai not found")


def status_with(
    ready: Readiness, generation: int = 1, since: datetime = T0, **extra: Any
) -> AgentModelStatus:
    cond = {
        "type": "Ready",
        "status": "True" if ready.ready else "False",
        "reason": ready.reason,
        "message": ready.message,
        "lastTransitionTime": since.isoformat(),
        "observedGeneration": generation,
    }
    return AgentModelStatus.model_validate(
        {"observedGeneration": generation, "conditions": [cond, *extra.get("others", [])]}
    )


def test_first_check_writes_the_condition() -> None:
    patch = status_patch(AgentModelStatus(), 1, MISSING, NOW)
    assert patch == {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "SecretNotFound",
                "message": "Secret ns/openai not found",
                "lastTransitionTime": "2025-03-01T12:05:30Z",
                "observedGeneration": 1,
            }
        ],
    }


@pytest.mark.parametrize("ready", [FOUND, MISSING])
def test_nothing_changed_means_no_write(ready: Readiness) -> None:
    assert status_patch(status_with(ready), 1, ready, NOW) is None


def test_a_flip_moves_the_transition_time() -> None:
    patch = status_patch(status_with(MISSING), 1, FOUND, NOW)
    assert patch is not None
    (cond,) = patch["conditions"]
    assert (cond["status"], cond["reason"]) == ("True", "SecretFound")
    assert cond["lastTransitionTime"] == "2025-03-01T12:05:30Z"


def test_a_new_reason_with_the_same_status_keeps_the_transition_time() -> None:
    no_key = Readiness(False, "KeyNotFound", "Secret ns/openai has no key 'apiKey'")
    patch = status_patch(status_with(MISSING), 1, no_key, NOW)
    assert patch is not None
    (cond,) = patch["conditions"]
    assert cond["reason"] == "KeyNotFound"
    assert cond["lastTransitionTime"] == "2025-03-01T12:00:00Z"


def test_a_new_generation_is_recorded_even_when_readiness_is_the_same() -> None:
    patch = status_patch(status_with(FOUND, generation=1), 2, FOUND, NOW)
    assert patch is not None
    assert patch["observedGeneration"] == 2
    assert patch["conditions"][0]["observedGeneration"] == 2
    assert patch["conditions"][0]["lastTransitionTime"] == "2025-03-01T12:00:00Z"


def test_other_conditions_are_kept() -> None:
    other = {"type": "Other", "status": "True", "reason": "X", "lastTransitionTime": T0}
    patch = status_patch(status_with(MISSING, others=[other]), 1, FOUND, NOW)
    assert patch is not None
    assert [c["type"] for c in patch["conditions"]] == ["Other", "Ready"]
    assert patch["conditions"][0]["lastTransitionTime"] == "2025-03-01T12:00:00Z"


# --- resolve -----------------------------------------------------------------------------------

SHARED = AgentModelSpec.model_validate(
    {
        "model": "gpt-4o-mini",
        "baseURL": "https://llm.example/v1",
        "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
        "temperature": 0.7,
        "maxTokens": 1000,
        "requestTimeoutSeconds": 30,
    }
)


def test_resolve_takes_the_agentmodel_as_a_whole() -> None:
    assert resolve(SHARED) == ModelSpec.model_validate(
        {
            "name": "gpt-4o-mini",
            "baseURL": "https://llm.example/v1",
            "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
            "temperature": 0.7,
            "maxTokens": 1000,
            "requestTimeoutSeconds": 30,
        }
    )


def test_task_overrides_win_over_the_defaults_zero_included() -> None:
    got = resolve(SHARED, ModelOverrides(temperature=0, max_tokens=5))
    assert (got.temperature, got.max_tokens, got.request_timeout_seconds) == (0, 5, 30)
    assert (got.name, got.base_url, got.api_key_secret_ref) == (
        "gpt-4o-mini",
        "https://llm.example/v1",
        REF,
    )


def test_resolve_accepts_a_model_spec_as_overrides_but_not_its_endpoint() -> None:
    inline = ModelSpec.model_validate(
        {"name": "other", "baseURL": "http://evil.example", "requestTimeoutSeconds": 9}
    )
    got = resolve(SHARED, inline)
    assert (got.name, got.base_url, got.request_timeout_seconds) == (
        "gpt-4o-mini",
        "https://llm.example/v1",
        9,
    )


def test_resolve_without_defaults_leaves_them_unset() -> None:
    got = resolve(AgentModelSpec(model="m"), ModelOverrides())
    assert got == ModelSpec(name="m")
    assert got.to_api() == {"name": "m"}


# --- models ------------------------------------------------------------------------------------


def test_spec_is_read_in_camel_case_and_clamped_like_a_task_model() -> None:
    spec = AgentModelSpec.model_validate(
        {"model": "m", "temperature": 9, "maxTokens": 0, "requestTimeoutSeconds": 10**9, "x": 1}
    )
    assert spec.temperature == limits.TEMPERATURE.maximum
    assert spec.max_tokens == limits.MAX_TOKENS.minimum
    assert spec.request_timeout_seconds == limits.TIMEOUT_SECONDS.maximum


# --- CRD ---------------------------------------------------------------------------------------

NUMBERS = {
    "temperature": limits.TEMPERATURE,
    "maxTokens": limits.MAX_TOKENS,
    "requestTimeoutSeconds": limits.TIMEOUT_SECONDS,
}


@pytest.mark.parametrize("field", sorted(NUMBERS))
def test_crd_bounds_are_those_of_limits_and_of_the_task_model(field: str) -> None:
    ours = SPEC_SCHEMA["properties"][field]
    task = TASK_MODEL_SCHEMA["properties"][field]
    assert (ours["minimum"], ours["maximum"]) == (NUMBERS[field].minimum, NUMBERS[field].maximum)
    assert (ours["type"], ours["minimum"], ours["maximum"]) == (
        task["type"],
        task["minimum"],
        task["maximum"],
    )
    assert f"{NUMBERS[field].minimum} to {NUMBERS[field].maximum}" in ours["description"]


def test_crd_strings_match_the_task_model() -> None:
    props, task = SPEC_SCHEMA["properties"], TASK_MODEL_SCHEMA["properties"]
    assert {k: v for k, v in props["model"].items() if k != "description"} == {
        k: v for k, v in task["name"].items() if k != "description"
    }
    for key in ("type", "maxLength", "pattern"):
        assert props["baseURL"][key] == task["baseURL"][key]
    assert props["apiKeySecretRef"]["properties"] == task["apiKeySecretRef"]["properties"]
    assert "namespace" not in props["apiKeySecretRef"]["properties"]
    assert SPEC_SCHEMA["required"] == ["model"]


def test_crd_names_and_printer_columns() -> None:
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], CRD["spec"]["scope"]) == ("agenttask.dev", "Namespaced")
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "AgentModel",
        "agentmodels",
        ["am"],
    )
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert [n for n, c in columns.items() if not c.get("priority")] == [
        "Model",
        "BaseURL",
        "Ready",
        "Age",
    ]
    assert columns["Model"]["jsonPath"] == ".spec.model"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert VERSION["subresources"] == {"status": {}}


def test_every_status_field_written_is_declared() -> None:
    declared = SCHEMA["properties"]["status"]["properties"]
    patch = status_patch(AgentModelStatus(), 3, FOUND, NOW)
    assert patch is not None
    assert set(patch) <= set(declared)
    condition_fields = declared["conditions"]["items"]["properties"]
    for cond in patch["conditions"]:
        assert set(cond) <= set(condition_fields)


# --- the timer's interval ----------------------------------------------------------------------


def test_recheck_interval_from_the_environment() -> None:
    assert recheck_seconds({}) == DEFAULT_RECHECK_SECONDS == 60
    assert recheck_seconds({RECHECK_ENV: " 0.5 "}) == 0.5


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf", "100000"])
def test_a_bad_recheck_interval_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=RECHECK_ENV):
        recheck_seconds({RECHECK_ENV: raw})


# --- Kube.secret_lookup (API answers faked; the value is never returned) ------------------------


class FakeCore:
    def __init__(self, answer: client.V1Secret | ApiException) -> None:
        self.answer = answer

    async def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
        if isinstance(self.answer, ApiException):
            raise self.answer
        return self.answer


def secret(data: dict[str, str] | None) -> client.V1Secret:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}
    return client.V1Secret(data=encoded or None)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (secret({"apiKey": "sk-x"}), SecretLookup.FOUND),
        (secret({"other": "sk-x"}), SecretLookup.NO_KEY),
        (secret(None), SecretLookup.NO_KEY),
        (secret({"apiKey": " \n"}), SecretLookup.EMPTY),
        (ApiException(status=404), SecretLookup.NOT_FOUND),
        (ApiException(status=403), SecretLookup.FORBIDDEN),
    ],
)
async def test_secret_lookup(answer: Any, expected: SecretLookup) -> None:
    kube = Kube(client.ApiClient(client.Configuration()))
    kube.core = FakeCore(answer)
    assert await kube.secret_lookup("ns", "openai", "apiKey") == expected
    await kube.api.close()


async def test_secret_lookup_raises_other_api_errors() -> None:
    kube = Kube(client.ApiClient(client.Configuration()))
    kube.core = FakeCore(ApiException(status=503))
    with pytest.raises(ApiException):
        await kube.secret_lookup("ns", "openai", "apiKey")
    await kube.api.close()
