"""Whether a task's transcript lost committed entries. Pure.

Status records how much of the transcript was committed (``status.transcript``: entries,
segments, and the earlier layout's chunks). The store reports what it found. Segments are
created in order and never deleted by the operator, so a missing segment below the highest one,
fewer entries than recorded, or a recorded chunk that is gone means somebody deleted
transcript ConfigMaps (``kubectl delete cm``, a namespace clean-up script): the results of
finished steps are gone. Going on would run those steps again — ask the model again, repeat
tool calls under new keys — so the task must stop instead, saying what is missing.
"""

from __future__ import annotations

from agenttask_operator.models import StoredTranscript, TranscriptInfo


def _ranges(indices: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"``."""
    spans: list[str] = []
    for i in sorted(indices):
        if spans and spans[-1].split("-")[-1] == str(i - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{i}"
        else:
            spans.append(str(i))
    return ", ".join(spans)


def lost(recorded: TranscriptInfo, found: StoredTranscript) -> str | None:
    """What is missing from the transcript, as a message; None if nothing is."""
    missing = [*found.missing_segments, *range(found.segments, recorded.segments)]
    gone = [n for n in recorded.config_maps if n not in found.config_maps]
    if not missing and not gone and found.entries >= recorded.entries:
        return None
    what = []
    if missing:
        what.append(f"segment(s) {_ranges(missing)}")
    if gone:
        what.append(f"ConfigMap(s) {', '.join(gone)}")
    detail = f" (missing: {'; '.join(what)})" if what else ""
    return (
        f"the transcript lost committed entries: status recorded {recorded.entries}, "
        f"{found.entries} are stored{detail}. Its ConfigMaps were deleted; going on would run "
        "finished steps again, so the task stopped. Re-create the task to start over."
    )
