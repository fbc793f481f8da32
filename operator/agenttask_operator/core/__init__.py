"""Core: pure, deterministic decisions. No I/O, no clock, no randomness except passed in."""

from agenttask_operator.core.actions import Action, Execute, Noop, Wait, WriteStatus
from agenttask_operator.core.decide import decide, on_failure
from agenttask_operator.core.errors import Failure

__all__ = ["Action", "Execute", "Failure", "Noop", "Wait", "WriteStatus", "decide", "on_failure"]
