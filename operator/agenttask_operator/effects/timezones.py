"""IANA time zones for ``AgentTaskSchedule.spec.timeZone``, read from the tz database.

The system's database comes first, the ``tzdata`` package (a dependency) when there is none,
so a slim image works too. Loading reads files, which is why it is an effect; ``core.cron``
gets the loaded zone.
"""

from __future__ import annotations

import re
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# An IANA name: Area/Location (Europe/Berlin, America/Argentina/Buenos_Aires) or one word (UTC).
# Not "localtime" or a path: the operator's own zone must never leak into a schedule.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9][A-Za-z0-9_+-]*)*")
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def load(name: str | None) -> tzinfo | None:
    """The zone named ``name`` (unset or empty: UTC); None when there is no such zone."""
    if not name:
        return UTC
    if not NAME.fullmatch(name) or name in NOT_ZONES or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
