"""Every kind of answer a model server or gateway sends is classified by the real client.

No Kubernetes here: the operator's openai client (effects.llm) talks HTTP to a raw server on
127.0.0.1 that sends exactly the bytes of each case in tests/malformed.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from agenttask_operator.core.answers import Reply
from agenttask_operator.effects import llm
from agenttask_operator.models import ModelSpec
from malformed import CASES, GOOD, trickle
from rawhttp import RawServer


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    server = RawServer().start()
    yield server
    server.stop()


async def ask(server: RawServer, limit: float = 10.0) -> Reply:
    return await llm.chat(
        ModelSpec(name="m"),
        base_url=server.base_url,
        credentials=llm.Credentials("sk-x"),
        messages=[{"role": "user", "content": "hi"}],
        tools=[],
        timeout_seconds=limit,
        iteration=1,
    )


@pytest.mark.parametrize("name", sorted(CASES))
async def test_every_answer_is_classified(raw: RawServer, name: str) -> None:
    case = CASES[name]
    raw.handler = lambda req: case.raw
    if case.outcome == "answer":
        reply = await ask(raw)
        assert reply.message["role"] == "assistant"
        return
    with pytest.raises(llm.StepFailed) as failed:
        await ask(raw)
    failure = failed.value.failure
    assert failure.transient is (case.outcome == "transient"), failure
    assert case.says in failure.message, failure.message
    assert len(failure.message) < 1000  # bodies are clipped


async def test_an_answer_that_trickles_in_is_cut_by_the_step_timeout(raw: RawServer) -> None:
    raw.handler = lambda req: trickle(0.05)
    async with asyncio.timeout(30):
        with pytest.raises(llm.StepFailed) as failed:
            await ask(raw, limit=1.0)
    assert failed.value.failure.transient
    raw.handler = lambda req: trickle(0.0005, GOOD)  # slow but in time: fine
    assert (await ask(raw)).message["content"] == "fine"
