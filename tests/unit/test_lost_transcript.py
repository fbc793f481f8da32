"""Unit tests of ``core.transcript.lost`` and of ``decide`` on a transcript that lost entries."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_decide import NOW, call, llm, llm_step, make_state, running, tool, tool_step

from agenttask_operator.core import Execute, WriteStatus, decide
from agenttask_operator.core.transcript import lost
from agenttask_operator.models import Step, StoredTranscript, TranscriptInfo

RECORDED = TranscriptInfo(entries=5, segments=6, bytes=900)


@pytest.mark.parametrize(
    "found",
    [
        StoredTranscript(entries=5, segments=6),
        StoredTranscript(entries=6, segments=7),  # a step stored after the last status write
        StoredTranscript(entries=5, segments=9),  # torn parts after it: skipped, not lost
    ],
)
def test_nothing_lost(found: StoredTranscript) -> None:
    assert lost(RECORDED, found) is None


def test_a_new_task_has_lost_nothing() -> None:
    assert lost(TranscriptInfo(), StoredTranscript()) is None


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (
            StoredTranscript(entries=0, segments=0),
            "recorded 5, 0 are stored (missing: segment(s) 0-5)",
        ),
        (StoredTranscript(entries=2, segments=6, missing_segments=(2,)), "segment(s) 2)"),
        (StoredTranscript(entries=2, segments=6, missing_segments=(2, 3, 5)), "segment(s) 2-3, 5)"),
        (StoredTranscript(entries=3, segments=4), "segment(s) 4-5)"),
        (StoredTranscript(entries=4, segments=6), "recorded 5, 4 are stored."),
    ],
)
def test_what_is_missing_is_named(found: StoredTranscript, says: str) -> None:
    msg = lost(RECORDED, found)
    assert msg is not None and says in msg
    assert "Re-create the task" in msg


def test_a_deleted_chunk_of_the_earlier_layout_is_named() -> None:
    recorded = TranscriptInfo(config_maps=("t-transcript-0", "t-transcript-1"), entries=3)
    found = StoredTranscript(entries=3, config_maps=("t-transcript-0",))
    msg = lost(recorded, found)
    assert msg is not None and "ConfigMap(s) t-transcript-1" in msg
    assert lost(recorded, StoredTranscript(entries=3, config_maps=recorded.config_maps)) is None


TRANSCRIPT = (llm(1, call("c1", "check_disk"), call("c2", "clean_logs")), tool(1, "c1"))


@pytest.mark.parametrize(
    ("current", "attempts"),
    [
        (None, 0),  # between steps
        (tool_step(1, "c2", "clean_logs"), 1),  # a call in flight
        (llm_step(2), 1),  # the next LLM request in flight (its tool results are gone too)
    ],
)
def test_decide_stops_a_task_whose_transcript_lost_entries(
    current: Step | None, attempts: int
) -> None:
    """Never run a finished step again: no LLM request, no tool call, no commit."""
    status = running(TRANSCRIPT, current_step=current, attempts=attempts)
    status = status.model_copy(update={"transcript": TranscriptInfo(entries=2, segments=2)})
    # The user deleted the ConfigMaps: the loop loaded nothing (or only the first entry).
    for transcript, found in [
        ((), StoredTranscript()),
        (TRANSCRIPT[:1], StoredTranscript(entries=1, segments=2, missing_segments=(0,))),
    ]:
        state = replace(make_state(status=status, transcript=transcript), stored=found)
        action = decide(state, NOW)
        assert isinstance(action, WriteStatus), action
        patch = action.patch
        assert (patch["phase"], patch["reason"]) == ("Failed", "TranscriptLost")
        assert "currentStep" in patch and patch["currentStep"] is None
        assert action.event is not None and action.event.reason == "TranscriptLost"
        assert "recorded 2" in patch["message"]


def test_decide_goes_on_when_nothing_is_lost() -> None:
    status = running(TRANSCRIPT).model_copy(
        update={"transcript": TranscriptInfo(entries=2, segments=2)}
    )
    state = replace(
        make_state(status=status, transcript=TRANSCRIPT),
        stored=StoredTranscript(entries=2, segments=2),
    )
    action = decide(state, NOW)
    assert isinstance(action, Execute) and action.step.tool_call_id == "c2"


def test_an_ended_task_is_never_failed_again() -> None:
    status = running(TRANSCRIPT).model_copy(
        update={"phase": "Succeeded", "transcript": TranscriptInfo(entries=2, segments=2)}
    )
    state = replace(make_state(status=status), stored=StoredTranscript())
    assert not isinstance(decide(state, NOW), WriteStatus)
