"""A catalogue of what model servers and gateways send besides a good answer.

Each entry: the raw bytes (see rawhttp.py) and what the operator must make of them — a
transient failure (retried), a permanent one (the task fails at once), or an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from rawhttp import Raw, completion_body, http

Outcome = Literal["transient", "permanent", "answer"]

TEXT = {"role": "assistant", "content": "fine"}
GOOD = completion_body(TEXT)


@dataclass(frozen=True)
class Case:
    """One kind of answer; ``says`` is a piece of the failure message the user must see."""

    raw: Raw
    outcome: Outcome
    says: str = ""


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _choice(message: Any, **extra: Any) -> bytes:
    return _json({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]} | extra)


HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

CASES: dict[str, Case] = {
    "good": Case(Raw([http(200, GOOD)]), "answer"),
    "html-200": Case(Raw([http(200, HTML, "text/html")]), "transient", "text/html"),
    "text-200": Case(Raw([http(200, b"upstream timed out", "text/plain")]), "transient", "JSON"),
    "no-content-type": Case(Raw([http(200, b"oops", None)]), "transient", "no content type"),
    "empty-200": Case(Raw([http(200, b"")]), "transient", "empty body"),
    "json-cut-short": Case(
        Raw([http(200, GOOD[: len(GOOD) // 2])]), "transient", "cut short or invalid"
    ),
    "body-cut-off": Case(
        Raw([http(200, GOOD[:20], length=len(GOOD))]), "transient", "connection error"
    ),
    "invalid-utf8": Case(Raw([http(200, b'{"choices": "\xff\xfe"}')]), "transient", "invalid"),
    "deeply-nested": Case(Raw([http(200, b"[" * 100_000 + b"]" * 100_000)]), "transient"),
    "json-array": Case(Raw([http(200, b"[1, 2]")]), "permanent", "not a JSON object"),
    "json-string": Case(Raw([http(200, b'"hello"')]), "permanent", "not a JSON object"),
    "no-choices": Case(Raw([http(200, _json({"id": "x"}))]), "transient", "no choices"),
    "empty-choices": Case(Raw([http(200, _json({"choices": []}))]), "transient", "no choices"),
    "choices-not-list": Case(Raw([http(200, _json({"choices": "x"}))]), "permanent", "`choices`"),
    "no-message": Case(
        Raw([http(200, _json({"choices": [{"index": 0}]}))]), "permanent", "message"
    ),
    "message-not-object": Case(Raw([http(200, _choice("hi"))]), "permanent", "message"),
    "content-number": Case(
        Raw([http(200, _choice({"role": "assistant", "content": 5}))]), "permanent", "content"
    ),
    "tool-calls-not-list": Case(
        Raw([http(200, _choice({"role": "assistant", "tool_calls": {"a": 1}}))]),
        "permanent",
        "tool_calls",
    ),
    "tool-call-no-function": Case(
        Raw([http(200, _choice({"role": "assistant", "tool_calls": [{"id": "a"}]}))]),
        "permanent",
        "no function name",
    ),
    "tool-call-bad-arguments": Case(
        Raw(
            [
                http(
                    200,
                    _choice(
                        {
                            "role": "assistant",
                            "tool_calls": [{"id": "a", "function": {"name": "t", "arguments": 7}}],
                        }
                    ),
                )
            ]
        ),
        "permanent",
        "arguments",
    ),
    "usage-not-object": Case(
        Raw([http(200, completion_body(TEXT, usage="lots"))]), "permanent", "`usage`"
    ),
    "usage-negative": Case(
        Raw([http(200, completion_body(TEXT, usage={"total_tokens": -1}))]), "permanent", "usage"
    ),
    "usage-missing": Case(Raw([http(200, _choice(TEXT))]), "answer"),
    "content-parts": Case(
        Raw(
            [http(200, _choice({"role": "assistant", "content": [{"type": "text", "text": "a"}]}))]
        ),
        "answer",
    ),
    "html-502": Case(Raw([http(502, HTML, "text/html")]), "transient", "HTTP 502"),
    "429-odd-retry-after": Case(
        Raw([http(429, b"{}", headers={"Retry-After": "soon"})]), "transient", "HTTP 429"
    ),
    "garbage-status-line": Case(Raw([b"HELLO WORLD\r\n\r\n"]), "transient", "connection error"),
    "closed-without-answer": Case(Raw([]), "transient", "connection error"),
    "huge-body": Case(
        Raw([http(200, b" " * (33 * 1024 * 1024) + GOOD)]), "permanent", "larger than 32 MiB"
    ),
}


def trickle(seconds_per_byte: float, body: bytes = GOOD) -> Raw:
    """A good answer that arrives one byte at a time."""
    whole = http(200, body)
    return Raw([whole[i : i + 1] for i in range(len(whole))], pause=seconds_per_byte)
