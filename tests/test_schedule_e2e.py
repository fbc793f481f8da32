"""AgentTaskSchedule against the real API server and the operator subprocess.

Schedules here tick every few seconds: the operator is started with the test-only
``AGENTTASK_SCHEDULE_SECONDS=1``, which allows a leading seconds field (``*/2 * * * * *``) and
names tasks by Unix second. The tasks really run, against the fake model. Covered: tasks on
time with labels, owner and history limits (transcripts go with them); one task per tick when
the operator is killed between creating a task and writing status, and with two operators at
once; missed ticks while it is down, within and past startingDeadlineSeconds; Forbid with a
long task; Replace; suspend and resume; invalid specs; ``kubectl get ats``; the CRD refusing a
bad task template as AgentTask itself does.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import LocalCluster

from fakeopenai import FakeServer, Reply, completion
from kubehelpers import GROUP, VERSION, create_object, eventually, get_object, kubectl, ready_of
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

PLURAL, KIND = "agenttaskschedules", "AgentTaskSchedule"
LABEL = "agenttask.dev/schedule"
SECONDS = {"AGENTTASK_SCHEDULE_SECONDS": "1"}
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "ops"}, "annotations": {"purpose": "report"}},
    "spec": {"input": "Write the report.", "model": {"name": "fake-model"}},
}


def answer(request: dict[str, Any]) -> Reply:
    return completion("The report is done.")


async def storage_ready(api: client.ApiClient, namespace: str) -> None:
    """Wait while a new CRD's storage is still initialising (the API server answers 429)."""
    co = client.CustomObjectsApi(api)

    async def ready() -> bool:
        try:
            for plural in (PLURAL, "agenttasks"):
                await co.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        except ApiException as e:
            if e.status != 429:
                raise
            return False
        return True

    await eventually(ready, within=30, what="the CRDs' storage to be ready")


async def create_schedule(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    await storage_ready(api, namespace)
    return await create_object(
        api, namespace, PLURAL, KIND, name, {"taskTemplate": TEMPLATE} | spec
    )


async def get_schedule(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await get_object(api, namespace, PLURAL, name)


async def patch_schedule(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"spec": spec},
        _content_type="application/merge-patch+json",
    )


async def tasks_of(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    """The schedule's tasks (by label), oldest tick first, without those being deleted."""
    found = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "agenttasks", label_selector=f"{LABEL}={name}"
    )
    items = [t for t in found["items"] if not t["metadata"].get("deletionTimestamp")]
    return sorted(items, key=lambda t: t["metadata"]["name"])


def phase(task: dict[str, Any]) -> str | None:
    return (task.get("status") or {}).get("phase")


async def events_of(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Events on the schedule, oldest first."""
    found = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}"
    )
    items = sorted(found.items, key=lambda e: (e.first_timestamp or e.event_time, e.metadata.name))
    return [(e.reason, e.message) for e in items]


def second_ahead(seconds: int) -> tuple[str, datetime]:
    """A once-a-minute schedule whose next tick is ``seconds`` from now, and that tick."""
    tick = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return f"{tick.second} * * * * *", tick


def tick_name(name: str, tick: datetime) -> str:
    return f"{name}-{int(tick.timestamp())}"


@pytest.fixture
def model(fake: FakeServer) -> FakeServer:
    fake.llm = answer
    return fake


# --- on time, labelled, owned, pruned, deleted with the schedule -------------------------------


async def test_tasks_on_time_run_and_only_the_history_limits_stay(
    api: client.ApiClient, namespace: str, model: FakeServer, operator: OperatorProcess
) -> None:
    operator.start(**SECONDS)
    operator.wait_started()
    schedule = await create_schedule(
        api,
        namespace,
        "report",
        {
            "schedule": "*/2 * * * * *",
            "timeZone": "Europe/Berlin",
            "successfulTasksHistoryLimit": 2,
        },
    )
    uid = schedule["metadata"]["uid"]
    seen: dict[str, str] = {}  # name -> uid of every task ever seen

    async def five_succeeded() -> bool:
        for t in await tasks_of(api, namespace, "report"):
            seen[t["metadata"]["name"]] = t["metadata"]["uid"]
        status = (await get_schedule(api, namespace, "report")).get("status") or {}
        return len(seen) >= 5 and "lastSuccessfulTime" in status

    await eventually(five_succeeded, within=60, what="five tasks, some succeeded")
    tasks = await tasks_of(api, namespace, "report")
    for t in tasks:
        meta = t["metadata"]
        assert meta["labels"] == {"team": "ops", LABEL: "report"}
        tick = datetime.fromisoformat(meta["annotations"]["agenttask.dev/scheduled-time"])
        assert meta["annotations"]["purpose"] == "report"
        assert meta["name"] == tick_name("report", tick)  # Unix second (seconds mode)
        assert tick.second % 2 == 0
        [owner] = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            KIND,
            "report",
            uid,
            True,
        )
        assert t["spec"]["input"] == "Write the report."

    async def pruned() -> bool:
        done = [t for t in await tasks_of(api, namespace, "report") if phase(t) == "Succeeded"]
        return len(done) <= 2

    await eventually(pruned, within=30, what="at most 2 succeeded tasks kept")
    status = (await get_schedule(api, namespace, "report"))["status"]
    ready = ready_of({"status": status})
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert status["observedGeneration"] == 1
    last = datetime.fromisoformat(status["lastScheduleTime"])
    nxt = datetime.fromisoformat(status["nextScheduleTime"])
    assert nxt - last >= timedelta(seconds=2) and nxt.second % 2 == 0
    reasons = [r for r, _ in await events_of(api, namespace, "report")]
    assert reasons.count("TaskCreated") >= 5 and "FailedCreate" not in reasons

    # The pruned tasks' transcripts went with them (owner references, garbage collector).
    names_left = {t["metadata"]["name"] for t in await tasks_of(api, namespace, "report")}
    gone = [u for n, u in seen.items() if n not in names_left]
    assert gone

    async def transcripts_gone() -> bool:
        cms = await client.CoreV1Api(api).list_namespaced_config_map(namespace)
        owners = {r.uid for c in cms.items for r in c.metadata.owner_references or []}
        return not owners & set(gone)

    await eventually(transcripts_gone, within=60, what="the pruned tasks' transcripts to go")

    # Deleting the schedule deletes its tasks.
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "report"
    )

    async def all_gone() -> bool:
        found = await client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "agenttasks", label_selector=f"{LABEL}=report"
        )
        return not found["items"]

    await eventually(all_gone, within=60, what="the schedule's tasks to be deleted with it")


# --- exactly once per tick -----------------------------------------------------------------


async def test_killed_between_create_and_status_no_second_task_for_that_tick(
    api: client.ApiClient,
    namespace: str,
    model: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    point = "schedule-after-create"
    operator.start(AGENTTASK_FAULT_PAUSE=point, **SECONDS)
    operator.wait_started()
    expr, tick = second_ahead(4)
    await create_schedule(api, namespace, "once", {"schedule": expr})
    marker = tmp_path / "faults" / point

    async def paused() -> bool:
        return marker.exists()

    await eventually(paused, within=30, what="the operator to pause after creating the task")
    [task] = await tasks_of(api, namespace, "once")
    assert task["metadata"]["name"] == tick_name("once", tick)
    status = (await get_schedule(api, namespace, "once")).get("status") or {}
    assert "lastScheduleTime" not in status  # the task exists, status does not know yet
    operator.kill()  # SIGKILL right there

    operator.start(**SECONDS)  # the tick is still the latest one: decided again

    async def caught_up() -> dict[str, Any] | None:
        st = (await get_schedule(api, namespace, "once")).get("status") or {}
        return st if st.get("lastScheduleTime") else None

    status = await eventually(caught_up, within=30, what="status to record the tick")
    assert datetime.fromisoformat(status["lastScheduleTime"]) == tick
    [again] = await tasks_of(api, namespace, "once")
    assert again["metadata"]["uid"] == task["metadata"]["uid"]  # the same task, not a new one
    reasons = [r for r, _ in await events_of(api, namespace, "once")]
    assert reasons.count("TaskCreated") == 1, reasons


@pytest.fixture
def second_operator(
    cluster: LocalCluster, namespace: str, model: FakeServer, workspace: Path, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """Another operator process on the same namespace (no peering): a second replica."""
    from operatorproc import operator_env

    env = operator_env(model.base_url, workspace, tmp_path / "faults-2")
    proc = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator-2.log", env)
    yield proc
    proc.stop()


async def test_two_operators_at_once_still_one_task_per_tick(
    api: client.ApiClient,
    namespace: str,
    model: FakeServer,
    operator: OperatorProcess,
    second_operator: OperatorProcess,
) -> None:
    operator.start(**SECONDS)
    second_operator.start(**SECONDS)
    operator.wait_started()
    second_operator.wait_started()
    await create_schedule(
        api, namespace, "twice", {"schedule": "*/2 * * * * *", "successfulTasksHistoryLimit": 100}
    )
    await asyncio.sleep(9)
    await patch_schedule(api, namespace, "twice", {"suspend": True})
    await asyncio.sleep(2)
    tasks = await tasks_of(api, namespace, "twice")
    ticks = [t["metadata"]["annotations"]["agenttask.dev/scheduled-time"] for t in tasks]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)  # one task per tick
    events = await events_of(api, namespace, "twice")
    created = [m.split()[1] for r, m in events if r == "TaskCreated"]  # "created <name> for …"
    assert sorted(created) == sorted(t["metadata"]["name"] for t in tasks), (events, ticks)


# --- missed ticks -------------------------------------------------------------------------------


async def test_down_over_ticks_only_the_latest_runs_and_the_rest_are_reported(
    api: client.ApiClient, namespace: str, model: FakeServer, operator: OperatorProcess
) -> None:
    operator.start(**SECONDS)
    operator.wait_started()
    await create_schedule(api, namespace, "down", {"schedule": "*/2 * * * * *"})

    async def first() -> bool:
        return len(await tasks_of(api, namespace, "down")) >= 1

    await eventually(first, within=30, what="a first task")
    operator.stop()
    before = {t["metadata"]["name"] for t in await tasks_of(api, namespace, "down")}
    reported = len(await events_of(api, namespace, "down"))
    await asyncio.sleep(7)  # three or four ticks pass
    operator.start(**SECONDS)

    async def missed() -> list[str] | None:
        events = (await events_of(api, namespace, "down"))[reported:]
        found = [m for r, m in events if r == "MissedSchedule"]
        return found or None

    [message] = await eventually(missed, within=30, what="a MissedSchedule Event")
    assert "earlier ticks" in message, message
    latest = datetime.fromisoformat(message.split("only the latest, ")[1].split(",")[0])
    new = [t for t in await tasks_of(api, namespace, "down") if t["metadata"]["name"] not in before]
    ticks = sorted(
        datetime.fromisoformat(t["metadata"]["annotations"]["agenttask.dev/scheduled-time"])
        for t in new
    )
    # Of the ticks missed while it was down, only the latest ran; later ones are on time.
    assert [t for t in ticks if t <= latest] == [latest], (latest, ticks)


async def test_past_the_starting_deadline_a_missed_tick_does_not_run(
    api: client.ApiClient, namespace: str, model: FakeServer, operator: OperatorProcess
) -> None:
    expr, tick = second_ahead(3)
    await create_schedule(api, namespace, "late", {"schedule": expr, "startingDeadlineSeconds": 2})
    await asyncio.sleep((tick - datetime.now(UTC)).total_seconds() + 5)  # the tick, 5 s ago
    operator.start(**SECONDS)

    async def skipped() -> dict[str, Any] | None:
        st = (await get_schedule(api, namespace, "late")).get("status") or {}
        return st if st.get("lastSkippedTime") else None

    status = await eventually(skipped, within=30, what="the tick recorded as skipped")
    assert datetime.fromisoformat(status["lastSkippedTime"]) == tick
    assert await tasks_of(api, namespace, "late") == []
    [(reason, message)] = await eventually(  # the Event follows the status write
        lambda: events_of(api, namespace, "late"), within=20, what="the MissedSchedule Event"
    )
    assert reason == "MissedSchedule" and "startingDeadlineSeconds (2)" in message


# --- concurrency policies ----------------------------------------------------------------------


@pytest.fixture
def held(fake: FakeServer) -> Iterator[threading.Event]:
    """The fake model answers only once the returned event is set: tasks run long."""
    release = threading.Event()
    fake.llm = lambda request: Reply(body=completion("done").body, until=release.is_set)
    yield release
    release.set()


async def test_forbid_skips_ticks_while_a_long_task_runs(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    held: threading.Event,
    operator: OperatorProcess,
) -> None:
    operator.start(**SECONDS)
    await create_schedule(
        api, namespace, "forbid", {"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid"}
    )

    async def asked() -> bool:
        return len(fake.requests) >= 1

    await eventually(asked, within=30, what="the first task to call the model")
    await asyncio.sleep(5)  # two or three ticks while it runs
    [running] = await tasks_of(api, namespace, "forbid")
    assert phase(running) == "Running"
    status = (await get_schedule(api, namespace, "forbid"))["status"]
    assert status["activeCount"] == 1 and status["active"][0]["name"] == running["metadata"]["name"]
    assert "lastSkippedTime" in status
    skipped = [m for r, m in await events_of(api, namespace, "forbid") if r == "SkippedForbidden"]
    assert len(skipped) >= 2 and running["metadata"]["name"] in skipped[0]

    held.set()  # it ends; the next tick creates the next task

    async def second() -> bool:
        return len(await tasks_of(api, namespace, "forbid")) >= 2

    await eventually(second, within=30, what="a task after the long one ended")
    first = await get_object(api, namespace, "agenttasks", running["metadata"]["name"])
    assert phase(first) == "Succeeded"


async def test_replace_deletes_the_running_task_for_the_next(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    held: threading.Event,
    operator: OperatorProcess,
) -> None:
    operator.start(**SECONDS)
    await create_schedule(
        api, namespace, "replace", {"schedule": "*/3 * * * * *", "concurrencyPolicy": "Replace"}
    )

    async def first() -> dict[str, Any] | None:
        tasks = await tasks_of(api, namespace, "replace")
        return tasks[0] if tasks else None

    old = await eventually(first, within=30, what="a first task")

    async def replaced() -> bool:
        names = [t["metadata"]["name"] for t in await tasks_of(api, namespace, "replace")]
        return bool(names) and old["metadata"]["name"] not in names

    await eventually(replaced, within=30, what="the first task replaced")
    try:
        await get_object(api, namespace, "agenttasks", old["metadata"]["name"])
        deleted = False
    except ApiException as e:
        deleted = e.status == 404
    if not deleted:  # its finalizer: the operator lets go as its loop stops

        async def gone() -> bool:
            try:
                await get_object(api, namespace, "agenttasks", old["metadata"]["name"])
            except ApiException as e:
                return e.status == 404
            return False

        await eventually(gone, within=30, what="the replaced task to be gone")
    events = await events_of(api, namespace, "replace")
    replaced_events = [m for r, m in events if r == "TaskReplaced"]
    assert replaced_events and old["metadata"]["name"] in replaced_events[0]
    assert [r for r, _ in events].count("TaskCreated") >= 2


# --- suspend, invalid specs, printer columns ---------------------------------------------------


def table(text: str) -> list[dict[str, str]]:
    """``kubectl get`` output as rows keyed by column header (headers may contain a space)."""
    lines = text.splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    # "LAST SCHEDULE": a single space inside a header does not start a column.
    starts = [s for s in starts if s == 0 or header[s - 2] == " "]
    bounds = [*starts, None]
    names = [header[a:b].strip() for a, b in itertools.pairwise(bounds)]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, bounds, bounds[1:], strict=False)}
        for line in lines[1:]
    ]


async def test_suspend_resume_and_kubectl_get_ats(
    api: client.ApiClient,
    namespace: str,
    model: FakeServer,
    operator: OperatorProcess,
    cluster: LocalCluster,
    crd: Path,
) -> None:
    operator.start(**SECONDS)
    await create_schedule(api, namespace, "paused", {"schedule": "*/2 * * * * *", "suspend": True})

    async def skipping() -> dict[str, Any] | None:
        st = (await get_schedule(api, namespace, "paused")).get("status") or {}
        return st if st.get("lastSkippedTime") else None

    status = await eventually(skipping, within=30, what="suspended ticks recorded")
    ready = ready_of({"status": status})
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert "nextScheduleTime" not in status
    assert await tasks_of(api, namespace, "paused") == []
    proc = kubectl(cluster, "get", "ats", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    [row] = table(proc.stdout)
    assert list(row) == ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "NEXT", "AGE"]
    assert (row["NAME"], row["SCHEDULE"], row["SUSPEND"]) == ("paused", "*/2 * * * * *", "true")
    assert (row["ACTIVE"], row["LAST SCHEDULE"], row["NEXT"]) == ("0", "", "")

    resumed_at = datetime.now(UTC)
    await patch_schedule(api, namespace, "paused", {"suspend": False})

    async def created() -> list[dict[str, Any]] | None:
        return await tasks_of(api, namespace, "paused") or None

    [task] = (await eventually(created, within=30, what="a task after resuming"))[:1]
    tick = datetime.fromisoformat(task["metadata"]["annotations"]["agenttask.dev/scheduled-time"])
    # No tick from the suspension ran late (1 s: the resume may race the last skip's write).
    assert tick >= resumed_at - timedelta(seconds=1)
    reasons = [r for r, _ in await events_of(api, namespace, "paused")]
    assert "MissedSchedule" not in reasons

    async def row_after() -> dict[str, str] | None:
        out = kubectl(cluster, "get", "agenttaskschedules", "-n", namespace).stdout
        [r] = table(out)
        return r if r["LAST SCHEDULE"] and r["NEXT"] else None

    row = await eventually(row_after, within=30, what="LAST SCHEDULE and NEXT in kubectl get")
    assert row["SUSPEND"] == "false"
    assert row["NEXT"].endswith("Z") and datetime.fromisoformat(row["NEXT"]) > tick
    wide = kubectl(cluster, "get", "ats", "-n", namespace, "-o", "wide").stdout
    assert table(wide)[0]["READY"] == "Scheduled" and "TIME ZONE" in wide.splitlines()[0]


@pytest.mark.parametrize(
    ("spec", "reason", "words", "env"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "Bad minute", SECONDS),
        ({"schedule": "0 3 * * *", "timeZone": "Mars/Olympus"}, "InvalidTimeZone", "Mars", {}),
        # Off by default: without the test flag, a seconds field is refused.
        ({"schedule": "*/2 * * * * *"}, "InvalidSchedule", "AGENTTASK_SCHEDULE_SECONDS", {}),
    ],
    ids=["bad-minute", "unknown-zone", "seconds-without-the-flag"],
)
async def test_an_invalid_spec_is_not_ready_and_creates_nothing(
    api: client.ApiClient,
    namespace: str,
    model: FakeServer,
    operator: OperatorProcess,
    spec: dict[str, Any],
    reason: str,
    words: str,
    env: dict[str, str],
) -> None:
    operator.start(**env)
    await create_schedule(api, namespace, "bad", spec)

    async def not_ready() -> dict[str, Any] | None:
        obj = await get_schedule(api, namespace, "bad")
        cond = ready_of(obj)
        return cond if cond and cond["status"] == "False" else None

    cond = await eventually(not_ready, within=30, what="Ready=False")
    assert cond["reason"] == reason and words in cond["message"]
    await asyncio.sleep(3)
    assert await tasks_of(api, namespace, "bad") == []
    events = await events_of(api, namespace, "bad")
    assert [r for r, _ in events] == [reason]


# --- the CRD ---------------------------------------------------------------------------------


async def test_the_crd_checks_the_template_with_agenttasks_own_schema(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    await storage_ready(api, namespace)
    co = client.CustomObjectsApi(api)
    bad_templates = [
        ({"input": "x", "model": {"name": "m"}, "maxIterations": 0}, "maxIterations"),
        ({"input": "x", "model": {"name": "m", "modelRef": {"name": "a"}}}, "exactly one"),
        ({"model": {"name": "m"}}, "input"),
        (
            {
                "input": "x",
                "model": {"name": "m"},
                "tools": [
                    {"name": "t", "http": {"url": "http://x"}, "toolServerRef": {"name": "s"}}
                ],
            },
            "either an HTTP tool",
        ),
    ]
    for template, complaint in bad_templates:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": "bad"},
            "spec": {"schedule": "@daily", "taskTemplate": {"spec": template}},
        }
        with pytest.raises(ApiException) as e:
            await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        assert e.value.status == 422 and complaint in str(e.value.body), e.value.body
    for schedule_spec, complaint in [
        ({"schedule": "TZ=UTC 0 3 * * *"}, "spec.schedule"),
        ({"schedule": "every day"}, "spec.schedule"),
        ({"schedule": "@daily", "timeZone": "../../etc/passwd"}, "spec.timeZone"),
        ({"schedule": "@daily", "concurrencyPolicy": "Sometimes"}, "concurrencyPolicy"),
    ]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": "bad"},
            "spec": {"taskTemplate": TEMPLATE} | schedule_spec,
        }
        with pytest.raises(ApiException) as e:
            await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        assert e.value.status == 422 and complaint in str(e.value.body), e.value.body
    long_name = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "n" * 53},
        "spec": {"schedule": "@daily", "taskTemplate": TEMPLATE},
    }
    with pytest.raises(ApiException) as e:
        await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, long_name)
    assert "at most 52 characters" in str(e.value.body)
    # Defaults of AgentTask's schema apply inside the template too.
    ok = await create_schedule(api, namespace, "good", {"schedule": "@daily"})
    assert ok["spec"]["taskTemplate"]["spec"]["maxIterations"] == 10
    assert ok["spec"]["concurrencyPolicy"] == "Allow"
    assert (ok["spec"]["successfulTasksHistoryLimit"], ok["spec"]["failedTasksHistoryLimit"]) == (
        3,
        1,
    )
