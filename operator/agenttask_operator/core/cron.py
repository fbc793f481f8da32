"""Cron ticks in a time zone: parse an expression, find the tick after or at-or-before a time.

Pure: the time zone is passed in (``effects.timezones`` loads it), and every time is an aware
``datetime``. Expressions are matched by `cronsim <https://pypi.org/project/cronsim/>`_ on
naive *wall-clock* times; this module maps wall-clock times to instants itself, so that
daylight-saving changes behave as in Kubernetes CronJob with ``timeZone`` (robfig/cron):

- a tick is every instant whose wall-clock time in the zone matches the expression;
- a wall-clock time that does not exist (clocks go forward) is skipped that day;
- a wall-clock time that occurs twice (clocks go back) is a tick both times.

(cronsim's own DST handling, which follows Debian's cron, is not used: it runs skipped times
late and repeated times once.)

Syntax: five fields (minute hour day-of-month month day-of-week) as cronsim reads them —
numbers, names (``JAN``, ``MON``), ``*``, ranges, steps, lists, and its extensions ``L``,
``LW``, ``5L`` and ``MON#2`` — with ``?`` for ``*`` in the day fields, and the two day fields
combined as in CronJob (see :func:`_day_field`); or a macro (``@hourly``,
``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``).
``TZ=``/``CRON_TZ=`` prefixes are refused (``spec.timeZone`` says the zone). A sixth, leading
seconds field is accepted only with ``seconds=True``, which the operator allows only for tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")

# The widest change of a zone's UTC offset looked for around a time (Samoa skipped a whole day
# in 2011); only offsets actually found there widen a search, so this costs nothing elsewhere.
SHIFT = timedelta(hours=26)
ZERO = timedelta(0)
SECOND = timedelta(seconds=1)
# A fixed start for checking that an expression can fire at all (cronsim looks 50 years ahead).
PROBE = datetime(2000, 1, 1)  # naive on purpose: a wall-clock time


class CronError(ValueError):
    """The expression cannot be used; the message says why, for the user."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression in a time zone: ``expression`` as cronsim reads it."""

    expression: str
    tz: tzinfo
    seconds: bool = False  # the expression has a leading seconds field (tests only)

    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t`` (in UTC), or None if none within 50 years."""
        wall = _wall(t, self.tz)
        # A tick after t reads an earlier wall-clock time than t only if clocks go back soon.
        back = max(_offset(t, self.tz) - _offset(t + SHIFT, self.tz), ZERO)
        best: datetime | None = None
        for naive in self._walls(wall - back, reverse=False):
            if best is not None and naive > _wall(best, self.tz) + self._slack_before(best):
                break
            for at in instants(naive, self.tz):
                if at > t and (best is None or at < best):
                    best = at
        return best

    def last_at_or_before(self, t: datetime) -> datetime | None:
        """The last tick at or before ``t`` (in UTC), or None if none within 50 years."""
        wall = _wall(t, self.tz)
        # A tick before t reads a later wall-clock time than t only if clocks went back lately.
        ahead = max(_offset(t - SHIFT, self.tz) - _offset(t, self.tz), ZERO)
        best: datetime | None = None
        for naive in self._walls(wall + ahead, reverse=True):
            if best is not None and naive < _wall(best, self.tz) - self._slack_after(best):
                break
            for at in instants(naive, self.tz):
                if at <= t and (best is None or at > best):
                    best = at
        return best

    def count_between(self, after: datetime, before: datetime, limit: int) -> int:
        """How many ticks lie strictly between ``after`` and ``before``, counting at most
        ``limit + 1`` (so that "more than ``limit``" is known without counting them all).
        """  # noqa: D205
        n, t = 0, after
        while n <= limit:
            nxt = self.next_after(t)
            if nxt is None or nxt >= before:
                break
            n, t = n + 1, nxt
        return n

    def _slack_before(self, best: datetime) -> timedelta:
        """How much later a wall-clock time may read than ``best`` and still come before it."""
        return max(_offset(best - SHIFT, self.tz) - _offset(best, self.tz), ZERO)

    def _slack_after(self, best: datetime) -> timedelta:
        """How much earlier a wall-clock time may read than ``best`` and still come after it."""
        return max(_offset(best, self.tz) - _offset(best + SHIFT, self.tz), ZERO)

    def _walls(self, start: datetime, *, reverse: bool) -> Iterator[datetime]:
        """Matching wall-clock times: after ``start``, or at or before it with ``reverse``."""
        start = start.replace(microsecond=0)
        if reverse:
            start += SECOND  # cronsim goes back from just before its start: include ``start``
        it = CronSim(self.expression, start, reverse=reverse)
        while True:
            try:
                yield next(it)
            except StopIteration:  # nothing within 50 years
                return


def instants(wall: datetime, tz: tzinfo) -> list[datetime]:
    """The instants (UTC) at which the clock in ``tz`` reads ``wall`` (naive): none when clocks
    skip it, two when they go back over it, else one.
    """  # noqa: D205
    found: list[datetime] = []
    for fold in (0, 1):
        at = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if _wall(at, tz) == wall and at not in found:
            found.append(at)
    return sorted(found)


def _wall(t: datetime, tz: tzinfo) -> datetime:
    """The wall-clock time in ``tz`` at instant ``t``, naive."""
    return t.astimezone(tz).replace(tzinfo=None, fold=0)


def _offset(t: datetime, tz: tzinfo) -> timedelta:
    return t.astimezone(tz).utcoffset() or ZERO


def parse(text: str, tz: tzinfo, *, seconds: bool = False) -> Cron:
    """Parse ``spec.schedule``; :class:`CronError` says what is wrong with it."""
    raw = " ".join(text.split())
    if not raw:
        raise CronError("the schedule is empty")
    if raw.startswith("@"):
        expanded = MACROS.get(raw)
        if expanded is None:
            known = ", ".join(MACROS)
            raise CronError(f"unknown macro {raw!r}; known: {known}")
        raw = expanded
    fields = raw.split()
    if "=" in fields[0]:
        raise CronError(
            f"{fields[0].split('=')[0]}= is not supported in the schedule: set spec.timeZone"
        )
    with_seconds = len(fields) == 6
    if with_seconds and not seconds:
        raise CronError(
            "6 fields: a seconds field is accepted only by an operator started with "
            "AGENTTASK_SCHEDULE_SECONDS=1, for tests; use 5 fields (minute hour day month "
            "weekday)"
        )
    if len(fields) not in (5, 6):
        raise CronError(
            f"{len(fields)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    fields[-3] = _day_field(fields[-3], 1, 31)
    fields[-1] = _day_field(fields[-1], 0, 6)
    expression = " ".join(fields)
    try:
        it = CronSim(expression, PROBE)
    except CronSimError as e:
        raise CronError(f"{e} in {text.strip()!r}") from None
    except (ValueError, IndexError) as e:  # cronsim lets a few malformed fields through
        raise CronError(f"cannot read {text.strip()!r}: {e}") from None
    try:
        next(it)
    except StopIteration:
        raise CronError(f"{text.strip()!r} matches no time within 50 years") from None
    return Cron(expression, tz, with_seconds)


def _day_field(field: str, lo: int, hi: int) -> str:
    """A day field written so that cronsim combines the two day fields as robfig/cron does.

    Both restricted → either matches; either unrestricted → both must. robfig calls a field
    unrestricted when one of its terms is ``*`` or ``?`` (``*/1`` too), cronsim when it starts
    with ``*``. So such a field becomes ``*`` (it matches every day anyway), and ``*/N`` (N > 1,
    restricted for robfig) becomes ``lo-hi/N``: the same days, not starting with ``*``.
    """
    terms = field.split(",")
    if any(t in ("*", "?", "*/1") for t in terms):
        return "*"
    return ",".join(f"{lo}-{hi}/{t[2:]}" if t.startswith("*/") else t for t in terms)


def tick_suffix(tick: datetime, seconds: bool = False) -> str:
    """The number that names a tick's task: its Unix minute (its Unix second in seconds mode)."""
    epoch = int(tick.timestamp())
    return str(epoch if seconds else epoch // 60)
