"""Chat-completion requests to an OpenAI-compatible server, with errors classified.

The openai SDK's own retries are switched off (``max_retries=0``): the operator owns the retry
policy, so the attempts a user configures are the attempts that happen. API keys are passed in
and never logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import openai

from agenttask_operator.core.errors import Failure, is_transient_status, llm_reason
from agenttask_operator.models import ModelSpec, Usage


class StepFailed(Exception):
    """An attempt failed; ``failure`` says whether it is worth retrying."""

    def __init__(self, failure: Failure) -> None:
        """Wrap a failure."""
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class LlmReply:
    """The assistant message (OpenAI format), its usage and why generation stopped."""

    message: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None


_clients: dict[tuple[str | None, str], openai.AsyncOpenAI] = {}


def _client(base_url: str | None, api_key: str) -> openai.AsyncOpenAI:
    key = (base_url, hashlib.sha256(api_key.encode()).hexdigest())
    if key not in _clients:
        _clients[key] = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    return _clients[key]


def retry_after_seconds(headers: Any) -> float | None:
    """The server's wish from ``retry-after-ms`` or ``retry-after`` (seconds), if any."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def classify(exc: Exception) -> Failure:
    """Turn an openai exception into a transient or permanent failure."""
    if isinstance(exc, openai.APITimeoutError):
        return Failure("request timed out", transient=True, reason="ModelTimeout")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(f"connection error: {exc}", transient=True, reason="ModelUnavailable")
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        text = f"HTTP {code}: {exc.message}"
        if is_transient_status(code):
            return Failure(
                text,
                transient=True,
                reason="ModelUnavailable",
                retry_after=retry_after_seconds(exc.response.headers),
            )
        return Failure(text, transient=False, reason=llm_reason(code))
    return Failure(f"{type(exc).__name__}: {exc}", transient=True, reason="ModelError")


async def chat(
    model: ModelSpec,
    *,
    base_url: str | None,
    api_key: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    timeout_seconds: float,
) -> LlmReply:
    """One chat-completion request. Raises StepFailed on any failure."""
    kwargs: dict[str, Any] = {"model": model.name, "messages": messages, "timeout": timeout_seconds}
    if tools:
        kwargs["tools"] = tools
    if model.temperature is not None:
        kwargs["temperature"] = model.temperature
    if model.max_tokens is not None:
        kwargs["max_tokens"] = model.max_tokens
    try:
        resp = await _client(base_url, api_key).chat.completions.create(**kwargs)
    except openai.OpenAIError as e:
        raise StepFailed(classify(e)) from e
    if not resp.choices:
        raise StepFailed(Failure("response has no choices", transient=True, reason="ModelError"))
    choice = resp.choices[0]
    msg = choice.message
    message: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if msg.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in msg.tool_calls
            if getattr(tc, "function", None) is not None
        ]
    usage = None
    if resp.usage is not None:
        usage = Usage(
            prompt_tokens=resp.usage.prompt_tokens or 0,
            completion_tokens=resp.usage.completion_tokens or 0,
            total_tokens=resp.usage.total_tokens or 0,
        )
    return LlmReply(message=message, usage=usage, finish_reason=choice.finish_reason)
