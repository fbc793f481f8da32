"""Nothing a model server sends may crash a task's loop — real API server, real operator.

A raw HTTP server answers every chat request with a randomly chosen answer from
tests/malformed.py (HTML pages with status 200, bodies cut short, odd JSON, a 33 MiB body, an
answer trickling in, garbage status lines, closed connections, good answers); the tasks' specs
sit at the bounds of the CRD schema. Every task must end with a phase and a reason, and the
operator's log must hold no "Daemon … failed" line and no traceback.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from crdschema import SPEC_SCHEMA
from kubehelpers import create_task, wait_phase
from malformed import CASES, trickle
from operatorproc import OperatorProcess
from rawhttp import Raw, RawServer

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("FUZZ_SEED", "20261125"))


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer().start()
    yield server
    server.stop()


def maximum(props: dict[str, Any], *path: str) -> Any:
    for key in path[:-1]:
        props = props[key]["properties"]
    return props[path[-1]]["maximum"]


def at_bounds() -> dict[str, Any]:
    """A spec with every bounded number the CRD admits at its maximum, except the retry policy
    (a year of backoff would outlast the test): the operator must not trip over any of them.
    """
    p: dict[str, Any] = SPEC_SCHEMA["properties"]
    return {
        "maxIterations": maximum(p, "maxIterations"),
        "stepTimeoutSeconds": maximum(p, "stepTimeoutSeconds"),
        "activeDeadlineSeconds": maximum(p, "activeDeadlineSeconds"),
        "ttlSecondsAfterFinished": maximum(p, "ttlSecondsAfterFinished"),
        "budget": {
            "maxTotalTokens": maximum(p, "budget", "maxTotalTokens"),
            "maxToolCalls": maximum(p, "budget", "maxToolCalls"),
        },
        "model": {
            "name": "m",
            "maxTokens": maximum(p, "model", "maxTokens"),
            "requestTimeoutSeconds": 20,
            "temperature": maximum(p, "model", "temperature"),
        },
    }


def chooser(seed: int) -> Any:
    rng, lock = random.Random(seed), threading.Lock()  # noqa: S311 (reproducible, not secret)
    choices = [*sorted(CASES), "trickle"]

    def answer(request: dict[str, Any]) -> Raw:
        with lock:
            name = rng.choice(choices)
        return trickle(0.02) if name == "trickle" else CASES[name].raw

    return answer


async def test_malformed_answers_never_crash_a_loop(
    api: client.ApiClient, namespace: str, raw: RawServer, operator: OperatorProcess
) -> None:
    raw.handler = chooser(SEED)
    operator.env["OPENAI_BASE_URL"] = raw.base_url
    operator.start()
    retry = {"maxAttempts": 3, "initialBackoffSeconds": 0.1, "maxBackoffSeconds": 0.5}
    tools = [{"name": "t", "description": "t", "http": {"url": "http://127.0.0.1:9/t"}}]
    names = []
    for i in range(10):
        spec: dict[str, Any] = {"input": f"task {i}", "model": {"name": "m"}, "retry": retry}
        if i % 2:
            spec |= at_bounds() | {"retry": retry}
        if i % 3 == 0:
            spec["tools"] = tools
        names.append(f"fuzz-{i}")
        await create_task(api, namespace, names[-1], spec)
    ended = [(await wait_phase(api, namespace, n, within=240))["status"] for n in names]
    for name, st in zip(names, ended, strict=True):
        assert st["phase"] in ("Succeeded", "Failed") and st.get("reason"), (SEED, name, st)
        if st["phase"] == "Failed":
            assert st["error"] and "interrupted" not in st["error"], (SEED, name, st)
    log = operator.output()
    assert "failed with an exception" not in log, log[-5000:]
    assert "Traceback" not in log, log[-5000:]
    assert len(raw.requests) >= len(names)


async def test_an_html_page_from_a_gateway_ends_with_the_real_cause(
    api: client.ApiClient, namespace: str, raw: RawServer, operator: OperatorProcess
) -> None:
    raw.handler = lambda req: CASES["html-200"].raw
    operator.env["OPENAI_BASE_URL"] = raw.base_url
    operator.start()
    retry = {"maxAttempts": 3, "initialBackoffSeconds": 0.1}
    await create_task(api, namespace, "gw", {"input": "x", "model": {"name": "m"}, "retry": retry})
    st = (await wait_phase(api, namespace, "gw"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "RetriesExhausted")
    assert "LLM request 1 failed 3 time(s)" in st["error"]
    assert "did not answer with JSON (content type text/html" in st["error"]
    assert "502 Bad Gateway" in st["error"]
    assert len(raw.requests) == 3
    log = operator.output()
    assert "failed with an exception" not in log and "Traceback" not in log
