"""The API client reads proxy settings once, not per request (see ``effects.kube``)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from agenttask_operator.effects.kube import resolve_proxy_once

HOST = "https://10.96.0.1:443"


async def api_for(host: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = host
    api = client.ApiClient(cfg)
    resolve_proxy_once(api, host)
    return api


@pytest.mark.parametrize("var", ["HTTPS_PROXY", "https_proxy"])
async def test_a_proxy_from_the_environment_is_kept(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, "http://proxy.example:3128")
    api = await api_for(HOST)
    try:
        assert api.rest_client.proxy == "http://proxy.example:3128"
        assert api.rest_client.pool_manager.trust_env is False  # no lookup per request
    finally:
        await api.close()


async def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.96.0.1")
    api = await api_for(HOST)
    try:
        assert not api.rest_client.proxy
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()


async def test_without_a_proxy_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    api = await api_for(HOST)
    try:
        assert not api.rest_client.proxy
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
