"""Reading a model server's 2xx answer: every byte string is classified, nothing raises.

The operator reads the body itself (not the SDK's parsed object), so that what a gateway or a
half-compatible server sends becomes a clear failure of that step instead of an exception:

- **transient** (retried with the task's backoff; a gateway or proxy produces these during an
  incident): a body that is not JSON (an HTML error page, plain text), a JSON content type
  whose body is cut short or garbled, an empty body, no ``choices``;
- **permanent** (retrying cannot help: the server speaks another protocol): JSON that is not a
  chat completion — ``choices`` not a list, a choice without a ``message`` object, ``content``
  neither text nor text parts, ``tool_calls`` not a list of function calls with a name and
  arguments, ``usage`` not an object of non-negative integers.

Lenient where real servers differ harmlessly: missing ``usage`` or ``finish_reason``; a tool
call without an ``id``, or with the id of an earlier call of the same answer, gets
``call_<iteration>_<index>`` (stored with the answer, so it never changes); ``arguments`` sent
as a JSON object are kept as its JSON text; ``content`` as a list of text parts is joined.

Each message names the content type and the first bytes of the body, clipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agenttask_operator.core.errors import Failure
from agenttask_operator.models import Usage

PREVIEW_BYTES = 200
REASON = "ModelResponseInvalid"


@dataclass(frozen=True)
class Reply:
    """The assistant message (OpenAI format), its usage and why generation stopped; the model
    and completion id the server named, if it did (for traces only: never stored).
    """  # noqa: D205

    message: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None
    model: str | None = None
    id: str | None = None


def preview(body: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes of ``body`` as one line of text, saying when it was cut."""
    text = " ".join(body[:limit].decode("utf-8", errors="replace").split())
    more = f"… ({len(body)} bytes in all)" if len(body) > limit else ""
    return f"{text!r}{more}" if text else "(empty)"


def _transient(what: str) -> Failure:
    return Failure(what, transient=True, reason=REASON)


def _permanent(what: str) -> Failure:
    return Failure(what, transient=False, reason=REASON)


def parse_completion(content_type: str | None, body: bytes, iteration: int) -> Reply | Failure:
    """The reply in a chat-completion body, or why there is none. Never raises."""
    ctype = (content_type or "").split(";")[0].strip().lower() or "no content type"
    seen = f"(content type {ctype}, body {preview(body)})"
    if not body.strip():
        return _transient(f"the model server answered with an empty body {seen}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        if "json" in ctype:
            return _transient(f"the model server's JSON answer is cut short or invalid {seen}")
        return _transient(f"the model server did not answer with JSON {seen}")
    if not isinstance(data, dict):
        return _permanent(f"the model server's answer is not a JSON object {seen}")
    choices = data.get("choices")
    if choices is None or choices == []:
        return _transient(f"the model server's answer has no choices {seen}")
    if not isinstance(choices, list):
        return _permanent(f"`choices` is not a list in the model server's answer {seen}")
    choice = choices[0]
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        return _permanent(f"`choices[0].message` is not an object {seen}")
    reply = _message(msg, iteration)
    if isinstance(reply, str):
        return _permanent(f"{reply} {seen}")
    usage = _usage(data.get("usage"))
    if isinstance(usage, str):
        return _permanent(f"{usage} {seen}")
    finish = choice.get("finish_reason")
    named, cid = data.get("model"), data.get("id")
    return Reply(
        reply,
        usage,
        finish if isinstance(finish, str) else None,
        named if isinstance(named, str) else None,
        cid if isinstance(cid, str) else None,
    )


def _content(value: Any) -> str | bool | None:
    """Text content: a string, null, or a list of text parts (joined). False: neither."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(t for t in texts if isinstance(t, str))
    return False


def _message(msg: dict[str, Any], iteration: int) -> dict[str, Any] | str:
    content = _content(msg.get("content"))
    if content is False:
        return "`choices[0].message.content` is neither text nor a list of text parts"
    out: dict[str, Any] = {"role": "assistant", "content": content}
    calls = msg.get("tool_calls")
    if calls is None or calls == []:
        return out
    if not isinstance(calls, list):
        return "`choices[0].message.tool_calls` is not a list"
    parsed: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        where = f"`choices[0].message.tool_calls[{i}]`"
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return f"{where} has no function name"
        args = fn.get("arguments")
        if args is None:
            args = "{}"
        elif isinstance(args, dict | list):
            args = json.dumps(args, ensure_ascii=False)
        elif not isinstance(args, str):
            return f"{where}.function.arguments is not a string"
        cid = call.get("id") if isinstance(call, dict) else None
        taken = {c["id"] for c in parsed}
        if not isinstance(cid, str) or not cid or cid in taken:
            cid = f"call_{iteration}_{i}"
            while cid in taken:
                cid += "_"
        parsed.append(
            {"id": cid, "type": "function", "function": {"name": fn["name"], "arguments": args}}
        )
    out["tool_calls"] = parsed
    return out


def _usage(value: Any) -> Usage | str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "`usage` is not an object"
    counts = {}
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        n = value.get(field)
        if n is None:
            n = 0
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63:
            return f"`usage.{field}` is not a non-negative integer"
        counts[field] = n
    return Usage(**counts)
