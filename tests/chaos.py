"""The chaos run shared by ``tests/test_chaos.py`` (small, in ``make test``) and ``make chaos``.

Several operator replicas (real processes) run tasks against a fault-injecting model — 429 with
``Retry-After``, 500, 503 with ``retry-after-ms``, answers slower than the step timeout (to be
discarded), malformed tool arguments — and an HTTP tool that records every delivery (the
ledger), while the run SIGKILLs replicas, freezes the API server (SIGSTOP), and scales a
replica away and back. Then it checks what must hold whatever happened:

- every task ``Succeeded`` with the right result;
- no tool call of a discarded model answer ran: every delivered call is in a stored answer;
- every tool call was delivered under its one key, ``<uid>:<call id>``; a call delivered again
  was in flight when something was disrupted (a kill, a clean exit, the freeze);
- no key was delivered while an earlier delivery of it still ran (no step ran twice at once).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from localcluster import LocalCluster

from fakeopenai import FakeServer, Reply, ToolCall, completion, error, tool_messages
from kubehelpers import create_task, eventually, get_task, transcript
from operatorproc import operator_env, replica_processes

TOOL_SECONDS = 0.3  # each delivery runs this long
STEP_TIMEOUT = 3  # seconds; a "slow" answer takes longer and is discarded
RESULT = "all three calls done"
FAULTS = ("429", "500", "503", "slow", "malformed")


@dataclass(frozen=True)
class Plan:
    """How big and how rough a run is."""

    tasks: int = 20
    replicas: int = 2
    kills: int = 5
    freeze_seconds: float = 3.0  # SIGSTOP of the API server once (0: none)
    scale_away: bool = True  # one replica exits cleanly and comes back later
    fault_rate: float = 0.2  # of model requests
    lease_seconds: float = 6.0
    seed: int = 7
    within: float = 300.0  # seconds for every task to finish


@dataclass
class Report:
    """What a run measured."""

    plan: Plan
    wall_seconds: float = 0.0
    # (start, end, what), monotonic: a kill is a moment, a freeze or a clean exit lasts
    disruptions: list[tuple[float, float, str]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    deliveries: int = 0
    calls: int = 0
    redelivered: int = 0
    interrupted_events: int = 0
    retry_events: int = 0
    epochs_above_one: int = 0
    handovers: int = 0  # the sum over tasks of (final epoch - 1): changes of owner
    owners: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def figures(self) -> str:
        """One line per figure, for the log."""
        kinds = Counter(what.split()[0] for _, _, what in self.disruptions)
        return "\n".join(
            [
                f"chaos: {self.plan.tasks} tasks, {self.plan.replicas} replicas, "
                f"wall time {self.wall_seconds:.1f} s",
                f"  disruptions: {dict(kinds)}",
                f"  model requests: {self.requests}, faults injected: {dict(self.faults)}",
                f"  tool deliveries: {self.deliveries} for {self.calls} calls "
                f"({self.redelivered} delivered again)",
                f"  Interrupted events: {self.interrupted_events}, Retrying events: "
                f"{self.retry_events}, tasks that changed hands: {self.epochs_above_one} "
                f"({self.handovers} handovers)",
                f"  tasks finished per replica: {dict(self.owners)}",
                f"  problems: {len(self.problems)}",
                *(f"    - {p}" for p in self.problems[:20]),
            ]
        )


class FaultyModel:
    """Three iterations per task (two calls, one call, the answer), with injected faults. Each
    answer's call ids are new (``r<request>-<n>``), so a call of a discarded answer is
    recognisable in the ledger.
    """

    def __init__(self, rate: float, seed: int, report: Report) -> None:
        """Inject faults into ``rate`` of the requests, chosen by ``seed``."""
        self.rate, self.rng, self.report = rate, random.Random(seed), report  # noqa: S311
        self.lock = threading.Lock()
        self.seq = itertools.count(1)

    def __call__(self, request: dict[str, Any]) -> Reply:
        """Answer one chat request."""
        with self.lock:
            n = next(self.seq)
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        done = len(tool_messages(request))
        if fault == "malformed" and done == 3:
            fault = None  # the final answer has no tool calls to spoil
        if fault is not None:
            self.report.faults[fault] += 1
        if fault == "429":
            return error(429, "rate limited", {"retry-after": "1"})
        if fault == "500":
            return error(500, "internal error")
        if fault == "503":
            return error(503, "overloaded", {"retry-after-ms": "300"})
        if done == 0:
            calls: list[tuple[str, str, dict[str, Any] | str]] = [
                (f"r{n}-1", "echo", {"x": 1}),
                (f"r{n}-2", "echo", "{not json" if fault == "malformed" else {"x": 2}),
            ]
            reply = completion(tool_calls=calls)
        elif done == 2:
            args: dict[str, Any] | str = "{not json" if fault == "malformed" else {"x": 3}
            reply = completion(tool_calls=[(f"r{n}-3", "echo", args)])
        else:
            reply = completion(RESULT)
        if fault == "slow":
            reply.delay = STEP_TIMEOUT + 1.5
        return reply


def echo(call: ToolCall, n: int) -> Reply:
    """The ledger's tool: takes ``TOOL_SECONDS``, echoes x."""
    return Reply(body=f"echo {call.body['arguments']['x']}", delay=TOOL_SECONDS)


def spec_for(fake: FakeServer) -> dict[str, Any]:
    """A task of the chaos run."""
    return {
        "input": "Call echo three times.",
        "model": {"name": "fake-model"},
        "stepTimeoutSeconds": STEP_TIMEOUT,
        "retry": {"maxAttempts": 12, "initialBackoffSeconds": 0.2, "maxBackoffSeconds": 2},
        "tools": [
            {
                "name": "echo",
                "description": "echo x",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "http": {"url": fake.tool_url("echo"), "timeoutSeconds": 30},
            }
        ],
    }


def overlapping(deliveries: list[ToolCall], seconds: float = TOOL_SECONDS) -> list[str]:
    """Keys delivered again while an earlier delivery of them (``seconds`` long) still ran."""
    by_key: dict[str | None, list[float]] = {}
    for d in deliveries:
        by_key.setdefault(d.idempotency_key, []).append(d.time)
    bad = []
    for key, times in by_key.items():
        times.sort()
        bad += [
            f"{key}: {b - a:.2f}s apart" for a, b in itertools.pairwise(times) if b - a < seconds
        ]
    return bad


class Chaos:
    """One run: replicas, tasks, disruptions, then the checks."""

    def __init__(
        self,
        cluster: LocalCluster,
        api: client.ApiClient,
        namespace: str,
        fake: FakeServer,
        workdir: Path,
        plan: Plan,
    ) -> None:
        """Prepare replicas ``replica-0`` … (not started)."""
        self.cluster, self.api, self.namespace, self.fake = cluster, api, namespace, fake
        self.plan, self.report = plan, Report(plan)
        self.rng = random.Random(plan.seed)  # noqa: S311
        workspace = workdir / "workspace"
        workspace.mkdir(exist_ok=True)
        env = operator_env(fake.base_url, workspace, workdir / "faults")
        env["AGENTTASK_LEASE_SECONDS"] = str(plan.lease_seconds)
        names = [f"replica-{i}" for i in range(plan.replicas)]
        self.replicas = replica_processes(cluster.kubeconfig, namespace, workdir, env, names)

    def _disrupted(self, what: str, since: float | None = None) -> None:
        now = time.monotonic()
        self.report.disruptions.append((now if since is None else since, now, what))

    async def run(self) -> Report:
        """Run, check, and return the report (``problems`` lists what did not hold)."""
        plan, fake = self.plan, self.fake
        fake.llm = FaultyModel(plan.fault_rate, plan.seed, self.report)
        fake.tools["echo"] = echo
        t0 = time.monotonic()
        for name in self.replicas:
            self.replicas[name].start()
        for proc in self.replicas.values():
            await asyncio.to_thread(proc.wait_started, 60.0)
        names = [f"chaos-{i:04d}" for i in range(plan.tasks)]
        sem = asyncio.Semaphore(16)

        async def create(name: str) -> None:
            async with sem:
                await create_task(self.api, self.namespace, name, spec_for(fake))

        await asyncio.gather(*(create(n) for n in names))
        try:
            objs = await self._disrupt_until_done(names)
        finally:
            for proc in self.replicas.values():
                proc.stop()
        self.report.wall_seconds = time.monotonic() - t0
        await self._check(objs)
        return self.report

    async def _disrupt_until_done(self, names: list[str]) -> list[dict[str, Any]]:
        plan = self.plan
        done: list[dict[str, Any]] = []

        async def finished() -> bool:
            nonlocal done
            done = [await get_task(self.api, self.namespace, n) for n in names]
            return all(
                (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") for o in done
            )

        order = sorted(self.replicas)
        kills = list(range(plan.kills))
        freeze_at = plan.kills // 2 if plan.freeze_seconds else -1
        away_at = plan.kills // 3 if plan.scale_away else -1
        away: str | None = None
        for i in kills:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            if i == freeze_at:
                apiserver = self.cluster.procs["kube-apiserver"]
                apiserver.send_signal(signal.SIGSTOP)
                frozen = time.monotonic()
                await asyncio.sleep(plan.freeze_seconds)
                apiserver.send_signal(signal.SIGCONT)
                self._disrupted(f"freeze of the API server, {plan.freeze_seconds:g}s", frozen)
            if i == away_at:
                away = order[(i + 1) % len(order)]
                leaving = time.monotonic()
                await asyncio.to_thread(self.replicas[away].stop)
                self._disrupted(f"scale-away of {away}", leaving)
            victims = [n for n in order if n != away]
            victim = victims[i % len(victims)]
            self._disrupted(f"kill of {victim}")
            self.replicas[victim].kill()
            await asyncio.sleep(self.rng.uniform(0.3, 1.5))
            self.replicas[victim].start()
            if away is not None and i == away_at + max(1, plan.kills // 3):
                self.replicas[away].start()
                self._disrupted(f"scale-back of {away}")
                away = None
        if away is not None:
            self.replicas[away].start()
        await eventually(finished, within=plan.within, what=f"{len(names)} tasks to finish")
        return done

    async def _check(self, objs: list[dict[str, Any]]) -> None:
        r, fake = self.report, self.fake
        r.requests, r.deliveries = len(fake.requests), len(fake.deliveries)
        stored_calls: set[str] = set()
        for o in objs:
            st, uid = o.get("status") or {}, o["metadata"]["uid"]
            name = o["metadata"]["name"]
            if st.get("phase") != "Succeeded" or st.get("result") != RESULT:
                r.problems.append(
                    f"{name}: {st.get('phase')} {st.get('reason')}: {st.get('message')}"
                )
            owner = st.get("owner") or {}
            r.owners[owner.get("replica") or "-"] += 1
            r.epochs_above_one += int((owner.get("epoch") or 0) > 1)
            r.handovers += max(0, (owner.get("epoch") or 1) - 1)
            for e in await transcript(self.api, self.namespace, uid):
                for call in (e.get("message") or {}).get("tool_calls") or ():
                    stored_calls.add(f"{uid}:{call['id']}")
        keys = Counter(d.idempotency_key for d in fake.deliveries)
        r.calls, r.redelivered = len(keys), sum(n - 1 for n in keys.values())
        for d in fake.deliveries:
            key = f"{d.body['task']['uid']}:{d.body['toolCallId']}"
            if d.idempotency_key != key:
                r.problems.append(f"key {d.idempotency_key} for call {key}")
            elif key not in stored_calls:
                r.problems.append(f"delivered a call of no stored answer: {key}")
        r.problems += [f"overlapping deliveries of {b}" for b in overlapping(fake.deliveries)]
        # A call delivered again must have been in flight at a disruption: some disruption
        # overlaps the time from its earlier delivery to the next one.
        by_key: dict[str | None, list[float]] = {}
        for d in fake.deliveries:
            by_key.setdefault(d.idempotency_key, []).append(d.time)
        for again, times in by_key.items():
            times.sort()
            for a, b in itertools.pairwise(times):
                if not any(start <= b and a - 1.0 <= end for start, end, _ in r.disruptions):
                    r.problems.append(
                        f"{again} delivered again {b - a:.1f}s later, no disruption between"
                    )
        events = await client.CoreV1Api(self.api).list_namespaced_event(self.namespace)
        reasons = Counter(e.reason for e in events.items)
        r.interrupted_events, r.retry_events = reasons["Interrupted"], reasons["Retrying"]


def dump(report: Report, path: Path) -> None:
    """Write the report's figures as JSON (for RESULTS-style records)."""
    data = {
        "plan": report.plan.__dict__,
        "wall_seconds": round(report.wall_seconds, 1),
        "disruptions": [w for _, _, w in report.disruptions],
        "faults": dict(report.faults),
        "requests": report.requests,
        "deliveries": report.deliveries,
        "calls": report.calls,
        "redelivered": report.redelivered,
        "interrupted_events": report.interrupted_events,
        "retry_events": report.retry_events,
        "epochs_above_one": report.epochs_above_one,
        "handovers": report.handovers,
        "owners": dict(report.owners),
        "problems": report.problems,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
