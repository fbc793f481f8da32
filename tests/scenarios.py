"""Scripted models for tests: each decides from the conversation so far, as a real model would.

Deciding from the conversation (not from a call counter) means a repeated request gets the same
answer, which is what the crash tests need to tell "asked again" from "answered differently".
"""

from __future__ import annotations

import json
from typing import Any

from fakeopenai import Reply, completion, tool_messages

DISK_INPUT = "I ran out of disk space. Sort it out."


def disk_model(request: dict[str, Any]) -> Reply:
    """check_disk → clean_logs → a final answer quoting what clean_logs freed."""
    done = tool_messages(request)
    if not done:
        return completion(tool_calls=[("call_check", "check_disk", {})])
    if len(done) == 1:
        return completion(tool_calls=[("call_clean", "clean_logs", {})])
    cleaned = json.loads(done[1]["content"])
    return completion(
        f"Deleted {cleaned['deletedFiles']} log files and freed {cleaned['freedBytes']} bytes.",
        prompt_tokens=100,
        completion_tokens=20,
    )


def three_step_model(request: dict[str, Any]) -> Reply:
    """Iteration 1: two HTTP tool calls; iteration 2: one more; iteration 3: the answer."""
    n = len(tool_messages(request))
    if n == 0:
        return completion(tool_calls=[("call_a", "echo", {"x": 1}), ("call_b", "echo", {"x": 2})])
    if n == 2:
        return completion(tool_calls=[("call_c", "echo", {"x": 3})])
    return completion("all three calls done")
