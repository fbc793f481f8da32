"""Unit tests of the credential rule and the URL allow-list (core.urls, core.credentials)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agenttask_operator.core import Execute, WriteStatus, decide
from agenttask_operator.core.credentials import model_access, refused_urls
from agenttask_operator.core.urls import host_allowed, redact, same_endpoint, valid_pattern
from agenttask_operator.handlers.context import Settings, scrub_openai_environment
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    ModelSpec,
    OperatorPolicy,
    SecretKeyRef,
    TaskState,
    ToolSpec,
)

DEFAULT = "https://llm.corp.example/v1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "url",
    [
        "https://llm.corp.example/v1",
        "https://llm.corp.example/v1/",
        "HTTPS://LLM.Corp.Example/v1",
        "https://llm.corp.example:443/v1",
        "https://llm.corp.example./v1",
        "https://llm.corp.example/v1/deployments/x",
        " https://llm.corp.example/v1 ",
    ],
)
def test_same_endpoint(url: str) -> None:
    assert same_endpoint(url, DEFAULT)


@pytest.mark.parametrize(
    "url",
    [
        "http://llm.corp.example/v1",  # another scheme
        "https://llm.corp.example:8443/v1",  # another port
        "https://llm.corp.example/v1beta",  # a prefix of the string, not of the path
        "https://llm.corp.example/",  # above the default's path
        "https://llm.corp.example/v2",
        "https://llm.corp.example.evil.test/v1",
        "https://evil.test/llm.corp.example/v1",
        "https://llm.corp.example@evil.test/v1",  # user info: the host is evil.test
        "https://user:pw@llm.corp.example/v1",  # user info at all
        "https://llm.corp.example/v1/../../evil",  # dot segments
        "https://llm.corp.example/v1/%2e%2e/evil",
        "https://llm.corp.example/v1%2f..%2fevil",
        "https://llm.corp.example/v1?redirect=https://evil.test",
        "https://llm.corp.example/v1#x",
        "https://llm.corp.example:99999/v1",  # invalid port
        "ftp://llm.corp.example/v1",
        "not a url",
        "",
    ],
)
def test_not_the_same_endpoint(url: str) -> None:
    assert not same_endpoint(url, DEFAULT)


def test_the_sdk_default_endpoint() -> None:
    policy = OperatorPolicy()  # OPENAI_BASE_URL unset
    assert same_endpoint("https://api.openai.com/v1/", policy.default_base_url)
    assert not same_endpoint("https://api.openai.com.evil.test/v1", policy.default_base_url)


def model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m"} | fields)


WITH_KEY = OperatorPolicy(default_base_url=DEFAULT, default_key=True)
REF = {"name": "llm", "key": "apiKey"}


@pytest.mark.parametrize(
    ("fields", "url", "credential"),
    [
        ({}, DEFAULT, "OperatorDefault"),
        ({"baseURL": DEFAULT + "/"}, DEFAULT + "/", "OperatorDefault"),
        ({"baseURL": "http://ollama:11434/v1"}, "http://ollama:11434/v1", "NoKey"),
        ({"baseURL": "https://llm.corp.example@evil.test/v1"}, None, "NoKey"),
        ({"apiKeySecretRef": REF}, DEFAULT, "Secret"),
        ({"baseURL": "http://mine/v1", "apiKeySecretRef": REF}, "http://mine/v1", "Secret"),
    ],
)
def test_model_access(fields: dict[str, Any], url: str | None, credential: str) -> None:
    access = model_access(model(**fields), WITH_KEY)
    assert access.credential == credential
    assert not access.missing
    if url is not None:
        assert access.base_url == url
    if credential == "Secret":
        assert access.secret == SecretKeyRef(name="llm", key="apiKey")


def test_default_key_missing_only_matters_at_the_default_endpoint() -> None:
    no_key = OperatorPolicy(default_base_url=DEFAULT, default_key=False)
    assert model_access(model(), no_key).missing
    assert not model_access(model(baseURL="http://mine/v1"), no_key).missing
    assert not model_access(model(apiKeySecretRef=REF), no_key).missing


def test_status_never_shows_user_info() -> None:
    access = model_access(model(baseURL="https://me:pw@mine.example/v1"), WITH_KEY)
    assert access.status().base_url == "https://mine.example/v1"
    assert redact("http://a/b") == "http://a/b"


@pytest.mark.parametrize(
    ("url", "patterns", "allowed"),
    [
        ("https://api.openai.com/v1", (), True),  # no list: everything
        ("https://api.openai.com/v1", ("api.openai.com",), True),
        ("https://API.openai.com./v1", ("api.openai.com",), True),
        ("https://api.openai.com.evil.test/v1", ("api.openai.com",), False),
        ("http://tools.ops.svc.cluster.local/x", ("*.svc.cluster.local",), True),
        ("http://svc.cluster.local/x", ("*.svc.cluster.local",), False),
        ("http://evilsvc.cluster.local/x", ("*.svc.cluster.local",), False),
        ("http://10.1.2.3:8080/x", ("10.0.0.0/8",), True),
        ("http://169.254.169.254/latest", ("10.0.0.0/8",), False),
        ("http://[fd00::1]/x", ("fd00::/8",), True),
        ("http://127.0.0.1:8080/x", ("127.0.0.1:8080",), True),
        ("http://127.0.0.1:8081/x", ("127.0.0.1:8080",), False),
        ("http://[::1]:8080/x", ("[::1]:8080",), True),
        ("https://a.example/x", ("a.example:443",), True),
        ("https://user@a.example/x", ("a.example",), True),
        ("not a url", ("a.example",), False),
    ],
)
def test_host_allowed(url: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(url, patterns) is allowed


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("api.openai.com", True),
        ("*.svc.cluster.local", True),
        ("10.0.0.0/8", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("", False),
        ("*", False),
        ("a.*.com", False),
        ("10.0.0.0/99", False),
        ("user@host", False),
    ],
)
def test_valid_pattern(pattern: str, valid: bool) -> None:
    assert valid_pattern(pattern) is valid


def spec(**fields: Any) -> AgentTaskSpec:
    return AgentTaskSpec.model_validate({"input": "x", "model": {"name": "m"}} | fields)


def test_refused_urls_name_the_field() -> None:
    policy = OperatorPolicy(default_base_url=DEFAULT, allowed_hosts=("*.ok.example",))
    s = spec(
        model={"name": "m", "baseURL": "http://bad.example/v1"},
        tools=[
            {"name": "a", "http": {"url": "http://t.ok.example/a"}},
            {"name": "check_disk"},
            {"name": "b", "http": {"url": "http://169.254.169.254/"}},
        ],
    )
    assert refused_urls(s, policy) == [
        ("spec.model.baseURL", "http://bad.example/v1"),
        ("spec.tools[2].http.url", "http://169.254.169.254/"),
    ]
    # The operator's own endpoint is always allowed; no list allows everything.
    assert refused_urls(spec(model={"name": "m", "baseURL": DEFAULT + "/"}), policy) == []
    assert refused_urls(s, OperatorPolicy(default_base_url=DEFAULT)) == []


def state(policy: OperatorPolicy, namespace: str = "team-a", **fields: Any) -> TaskState:
    return TaskState(
        namespace=namespace,
        name="t",
        uid="u",
        generation=1,
        spec=spec(**fields),
        status=AgentTaskStatus(),
        builtin_tools=frozenset({"check_disk"}),
        policy=policy,
    )


def test_decide_refuses_before_any_request() -> None:
    policy = OperatorPolicy(default_base_url=DEFAULT, default_key=True, allowed_hosts=("ok",))
    action = decide(state(policy, model={"name": "m", "baseURL": "http://bad/v1"}), NOW)
    assert isinstance(action, WriteStatus)
    assert action.patch["reason"] == "URLNotAllowed"
    assert "spec.model.baseURL http://bad/v1" in action.patch["error"]
    assert "(ok)" in action.patch["error"]

    no_key = OperatorPolicy(default_base_url=DEFAULT)
    action = decide(state(no_key), NOW)
    assert isinstance(action, WriteStatus)
    assert action.patch["reason"] == "ModelCredentialsMissing"

    scoped = OperatorPolicy(default_base_url=DEFAULT, default_key=True, builtin_namespaces=("ops",))
    action = decide(state(scoped, tools=[ToolSpec(name="check_disk").to_api()]), NOW)
    assert isinstance(action, WriteStatus)
    assert action.patch["reason"] == "ToolNotAllowed"
    assert "'team-a'" in action.patch["error"] and "ops" in action.patch["error"]
    action = decide(state(scoped, "ops", tools=[ToolSpec(name="check_disk").to_api()]), NOW)
    assert isinstance(action, Execute)


def test_first_llm_intent_says_where_requests_go() -> None:
    policy = OperatorPolicy(default_base_url=DEFAULT, default_key=True)
    action = decide(state(policy, model={"name": "m", "baseURL": "http://mine:8080/v1"}), NOW)
    assert isinstance(action, Execute)
    assert action.intent["model"] == {"baseURL": "http://mine:8080/v1", "credential": "NoKey"}


def test_settings_read_the_environment_and_scrub_it() -> None:
    env = {
        "OPENAI_API_KEY": " sk-x ",
        "OPENAI_BASE_URL": DEFAULT,
        "OPENAI_ORG_ID": "org",
        "OPENAI_CUSTOM_HEADERS": "X-A: b",
        "AGENTTASK_ALLOWED_HOSTS": "a.example, *.b.example,",
        "AGENTTASK_BUILTIN_NAMESPACES": "ops",
        "HOME": "/root",
    }
    s = Settings.from_env(env)
    assert s.default_api_key == "sk-x" and s.organization == "org"
    assert "sk-x" not in repr(s)
    assert s.allowed_hosts == ("a.example", "*.b.example")
    assert s.policy == OperatorPolicy(
        default_base_url=DEFAULT,
        default_key=True,
        allowed_hosts=("a.example", "*.b.example"),
        builtin_namespaces=("ops",),
    )
    assert scrub_openai_environment(env) == [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_CUSTOM_HEADERS",
        "OPENAI_ORG_ID",
    ]
    assert env == {
        "AGENTTASK_ALLOWED_HOSTS": "a.example, *.b.example,",
        "AGENTTASK_BUILTIN_NAMESPACES": "ops",
        "HOME": "/root",
    }


def ref_state(policy: OperatorPolicy, agent_model: ModelSpec | None, **status: Any) -> TaskState:
    return TaskState(
        namespace="team-a",
        name="t",
        uid="u",
        generation=1,
        spec=spec(model={"modelRef": {"name": "shared"}, "temperature": 0.5}),
        status=AgentTaskStatus.model_validate(status),
        policy=policy,
        agent_model=agent_model,
    )


SHARED = ModelSpec.model_validate(
    {"name": "big", "baseURL": "https://gw.example/v1", "apiKeySecretRef": REF, "temperature": 0.5}
)


def test_a_model_ref_to_nothing_fails_naming_the_object() -> None:
    action = decide(ref_state(WITH_KEY, None), NOW)
    assert isinstance(action, WriteStatus)
    assert action.patch["reason"] == "AgentModelNotFound"
    assert "AgentModel team-a/shared not found" in action.patch["error"]


def test_a_model_ref_is_resolved_once_at_start_and_used_as_a_whole() -> None:
    action = decide(ref_state(WITH_KEY, SHARED), NOW)
    assert isinstance(action, Execute)
    assert action.intent["resolvedModel"] == SHARED.to_api()
    assert action.intent["model"] == {"baseURL": "https://gw.example/v1", "credential": "Secret"}
    # Started: what was stored wins over whatever the AgentModel says now.
    started = ref_state(
        WITH_KEY,
        SHARED.model_copy(update={"base_url": "http://elsewhere/v1"}),
        phase="Running",
        startTime="2026-01-01T00:00:00Z",
        resolvedModel=SHARED.to_api(),
    )
    assert started.model == SHARED
    refused = OperatorPolicy(default_base_url=DEFAULT, default_key=True, allowed_hosts=("x",))
    action = decide(ref_state(refused, SHARED), NOW)
    assert isinstance(action, WriteStatus)
    assert action.patch["reason"] == "URLNotAllowed"
    assert "AgentModel shared baseURL https://gw.example/v1" in action.patch["error"]
