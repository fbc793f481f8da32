"""Chat-completion requests to an OpenAI-compatible server, with errors classified.

The openai SDK's own retries are switched off (``max_retries=0``): the operator owns the retry
policy, so the attempts a user configures are the attempts that happen. Credentials are passed
in (which key goes where is decided by ``core.credentials``) and never logged or written
anywhere; a request without a key carries no ``Authorization`` header at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import openai

from agenttask_operator.core.answers import Reply, parse_completion
from agenttask_operator.core.errors import Failure, is_transient_status, llm_reason
from agenttask_operator.effects import tracing
from agenttask_operator.models import ModelSpec

BODY_LIMIT = 32 * 1024 * 1024  # bytes of a model's answer read at most


class StepFailed(Exception):
    """An attempt failed; ``failure`` says whether it is worth retrying."""

    def __init__(self, failure: Failure) -> None:
        """Wrap a failure."""
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class Credentials:
    """What one request authenticates with: a key (None: none at all) and, for the operator's
    default endpoint only, its organisation and project headers. Never logged.
    """  # noqa: D205

    api_key: str | None = field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None


NO_KEY = "no-key"  # the SDK wants a string; a keyless request omits the header altogether
_clients: dict[tuple[str, str, str | None, str | None], openai.AsyncOpenAI] = {}


def _client(base_url: str, creds: Credentials) -> openai.AsyncOpenAI:
    """One client per endpoint and credential. It sends nothing the operator did not pass in
    (the operator removes ``OPENAI_*`` from its environment, which the SDK would read) and
    follows no redirect: a 3xx is an answer, so a key never follows a request elsewhere.
    """  # noqa: D205
    digest = hashlib.sha256((creds.api_key or "").encode()).hexdigest()
    key = (base_url, digest, creds.organization, creds.project)
    if key not in _clients:
        _clients[key] = openai.AsyncOpenAI(
            api_key=creds.api_key or NO_KEY,
            organization=creds.organization,
            project=creds.project,
            base_url=base_url,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(follow_redirects=False),
        )
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
                status=code,
            )
        return Failure(text, transient=False, reason=llm_reason(code))
    return Failure(f"{type(exc).__name__}: {exc}", transient=True, reason="ModelError")


def without_key(failure: Failure, key: str | None) -> Failure:
    """``failure`` with the request's key masked: a server (a gateway, a proxy) may quote the
    key it refused in its error, and that message goes to status, Events and the log.
    """  # noqa: D205
    if not key or key not in failure.message:
        return failure
    return replace(failure, message=failure.message.replace(key, "[redacted]"))


async def chat(
    model: ModelSpec,
    *,
    base_url: str,
    credentials: Credentials,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    timeout_seconds: float,
    iteration: int,
) -> Reply:
    """One chat-completion request; its answer read and classified by ``core.answers``.

    Raises StepFailed on any failure: an HTTP error, a broken connection, an answer that is not
    a chat completion (an HTML page from a gateway, a truncated body, odd JSON).
    """
    # The messages and tools are JSON already: they go in ``extra_body``, which the SDK sends as
    # is. Passed as ``messages=``/``tools=``, the SDK walks every message against its typed
    # schema on each request (measured: 6 ms of CPU for 17 messages, twice a raw status PATCH).
    extra: dict[str, Any] = {"messages": messages}
    if tools:
        extra["tools"] = tools
    kwargs: dict[str, Any] = {
        "model": model.name,
        "messages": [],
        "extra_body": extra,
        "timeout": timeout_seconds,
    }
    if model.temperature is not None:
        kwargs["temperature"] = model.temperature
    if model.max_tokens is not None:
        kwargs["max_tokens"] = model.max_tokens
    headers: dict[str, Any] = tracing.headers()  # traceparent, when traces are on
    if credentials.api_key is None:
        headers["Authorization"] = openai.omit
    if headers:
        kwargs["extra_headers"] = headers
    client = _client(base_url, credentials)
    try:
        # The SDK's timeout bounds each read; this bounds the whole answer (one that trickles in).
        async with (
            asyncio.timeout(timeout_seconds),
            client.chat.completions.with_streaming_response.create(**kwargs) as resp,
        ):
            content_type = resp.headers.get("content-type")
            body = await read_limited(resp.iter_bytes(), BODY_LIMIT)
    except TimeoutError:
        msg = f"no complete answer within {timeout_seconds:g}s"
        raise StepFailed(Failure(msg, transient=True, reason="ModelTimeout")) from None
    except openai.OpenAIError as e:
        raise StepFailed(without_key(classify(e), credentials.api_key)) from e
    except httpx2.HTTPError as e:  # the body broke off after the status line
        msg = f"connection error while reading the answer: {type(e).__name__}: {e}"
        raise StepFailed(Failure(msg, transient=True, reason="ModelUnavailable")) from e
    if body is None:
        msg = f"the model server's answer is larger than {BODY_LIMIT // (1024 * 1024)} MiB"
        raise StepFailed(Failure(msg, transient=False, reason="ModelResponseInvalid"))
    reply = parse_completion(content_type, body, iteration)
    if isinstance(reply, Failure):
        raise StepFailed(reply)
    tracing.reply(reply)
    return reply


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None once it grows past ``limit`` bytes (the rest is not read)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)
