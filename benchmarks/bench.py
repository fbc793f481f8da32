"""agenttask-operator benchmark: one run, its own control plane, every figure beside its goal.

    .venv/bin/python benchmarks/bench.py [--quick] [--tasks 200,1000] [--figures floor,seq,...]

Starts etcd + kube-apiserver + kube-controller-manager (hack/localcluster.py), applies crds/,
starts a fake OpenAI-compatible model and HTTP tool (benchmarks/fakemodel.py) and, per
measurement, the operator (``python -m agenttask_operator --namespace <ns>``) as a subprocess.
Prints a table "figure | measured | goal" and writes it to benchmarks/RESULTS.md. See
benchmarks/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hack"))
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    GROUP,
    PLURAL,
    REPO,
    VERSION,
    FakeProcess,
    OperatorProcess,
    Requests,
    Watcher,
    api_client,
    create_tasks,
    kubectl,
    log,
    new_namespace,
    steps_of,
    task_body,
    task_spec,
)
from kubernetes_asyncio import client  # noqa: E402
from localcluster import LocalCluster  # noqa: E402
from metrics import (  # noqa: E402
    ApiKey,
    EtcdSample,
    RssSampler,
    Scraper,
    cpu_seconds,
    machine_cpu_seconds,
    percentile,
)

MERGE = "application/merge-patch+json"
KIB, MIB = 1024, 1024 * 1024
FIGURES = ("floor", "seq", "growth", "throughput", "replicas", "inflight")
THROUGHPUT_ITERATIONS = 4  # 4 iterations of 1 tool call + the answer = 9 steps
INFLIGHT_ITERATIONS = 200  # more than any task gets through while it is measured
INFLIGHT_TOOL_DELAY = 3.0


# --- the report


@dataclass
class Row:
    """One line of the main table."""

    figure: str
    measured: str
    goal: str
    ok: bool | None = None


@dataclass
class Report:
    """Everything measured, in order; rendered as text and as Markdown."""

    rows: list[Row] = field(default_factory=list)
    sections: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, figure: str, measured: str, goal: str, ok: bool | None = None) -> None:
        """Add a figure (and print it at once)."""
        self.rows.append(Row(figure, measured, goal, ok))
        log(f"==> {figure}: {measured}   [goal: {goal}]{_mark(ok)}")

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        """Add a detail table."""
        self.sections.append((title, header, rows))

    def note(self, text: str) -> None:
        """Add a remark (failures, anomalies)."""
        self.notes.append(text)
        log(f"note: {text}")

    def markdown(self, meta: list[tuple[str, str]]) -> str:
        """The report as Markdown (RESULTS.md)."""
        out = ["# agenttask-operator benchmark results", ""]
        out += [f"- **{k}**: {v}" for k, v in meta]
        out += ["", "## Figures", ""]
        out += _md_table(
            ["figure", "measured", "goal", "met"],
            [[r.figure, r.measured, r.goal, _mark(r.ok).strip()] for r in self.rows],
        )
        for title, header, rows in self.sections:
            out += ["", f"## {title}", ""]
            out += _md_table(header, rows)
        if self.notes:
            out += ["", "## Notes", ""]
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        """The report as plain text (stdout)."""
        out: list[str] = []
        out += _text_table(
            ["figure", "measured", "goal", "met"],
            [[r.figure, r.measured, r.goal, _mark(r.ok).strip()] for r in self.rows],
        )
        for title, header, rows in self.sections:
            out += ["", title, *_text_table(header, rows)]
        if self.notes:
            out += ["", "Notes:", *(f"- {n}" for n in self.notes)]
        return "\n".join(out) + "\n"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" yes" if ok else " NO")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return lines


def ms(seconds: float) -> str:
    """Seconds as milliseconds, for a table."""
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    """Seconds, for a table."""
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def kib(n: float) -> str:
    """Bytes as KiB, for a table."""
    return f"{n / KIB:.1f} KiB"


# --- measurements


@dataclass
class Snap:
    """The counters at one moment: API requests, etcd, CPU of every process, our own requests."""

    t: float
    api: Counter[ApiKey]
    etcd: EtcdSample
    cpu: dict[str, float]
    own: Counter[ApiKey]


@dataclass
class Floor:
    """The raw PATCH floor."""

    median: float
    p90: float
    throughput: float
    apiserver_cpu: float  # seconds per PATCH


@dataclass
class RunCost:
    """Per-step costs of one run, from two snapshots."""

    steps: int
    api: Counter[ApiKey]
    etcd_bytes: float
    etcd_db_growth: float
    cpu: dict[str, float]  # seconds over the run, per process

    @property
    def api_per_step(self) -> float:
        """API requests per step (watches excluded: they are not per step)."""
        return sum(v for k, v in self.api.items() if k[0] != "WATCH") / self.steps


class Bench:
    """One benchmark run."""

    def __init__(self, args: argparse.Namespace, cluster: LocalCluster, workdir: Path) -> None:
        """Configure; :meth:`run` does the work."""
        self.args, self.cluster, self.workdir = args, cluster, workdir
        self.report = Report()
        self.own: Counter[ApiKey] = Counter()
        self.operators: list[OperatorProcess] = []
        self.watchers: list[Watcher] = []
        self.fake: FakeProcess | None = None
        self.floor: Floor | None = None
        self.costs: dict[str, RunCost] = {}
        self.sampler = RssSampler()
        self.operator_src: Path | None = args.operator_src
        self.api: client.ApiClient
        self.scraper: Scraper
        self.requests: Requests

    # --- plumbing ---

    def pids(self) -> dict[str, int]:
        """The processes whose CPU is accounted."""
        procs = self.cluster.procs
        out = {
            "kube-apiserver": procs["kube-apiserver"].pid,
            "etcd": procs["etcd"].pid,
            "kube-controller-manager": procs["kube-controller-manager"].pid,
            "harness": os.getpid(),
        }
        if self.fake is not None:
            out["fake model"] = self.fake.pid
        if self.operators and self.operators[-1].proc is not None:
            out["operator"] = self.operators[-1].pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds of every accounted process so far, and of the rest of the machine."""
        out = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        out["(rest of the machine)"] = machine_cpu_seconds() - sum(out.values())
        return out

    async def snap(self) -> Snap:
        """Counters now (CPU read last: scraping /metrics costs CPU too, before the run)."""
        api = await self.scraper.api_requests()
        etcd = await self.scraper.etcd()
        return Snap(time.monotonic(), api, etcd, self.cpu(), Counter(self.own))

    def cost(self, before: Snap, after: Snap, steps: int, cpu_end: dict[str, float]) -> RunCost:
        """What the run between two snapshots cost (our own requests taken out)."""
        api = after.api - before.api
        api.subtract(after.own - before.own)
        api = +api  # drop zero and negative counts
        return RunCost(
            steps=steps,
            api=api,
            etcd_bytes=after.etcd.put_bytes - before.etcd.put_bytes,
            etcd_db_growth=after.etcd.db_size - before.etcd.db_size,
            cpu={k: cpu_end.get(k, 0.0) - before.cpu.get(k, 0.0) for k in cpu_end},
        )

    @contextlib.asynccontextmanager
    async def operating(
        self, namespace: str, *, kill: bool = False
    ) -> AsyncIterator[OperatorProcess]:
        """A fresh namespace and an operator watching it (stopped afterwards)."""
        await new_namespace(self.api, namespace)
        assert self.fake is not None
        op = OperatorProcess(
            self.cluster.kubeconfig,
            namespace,
            self.workdir / f"operator-{namespace}.log",
            self.fake.base_url,
            self.workdir / "workspace",
            self.operator_src,
        )
        self.operators.append(op)
        op.start()
        self.sampler.pid = op.pid
        try:
            await op.wait_started()
            await asyncio.sleep(2.0)  # its watches and startup lists are done
            yield op
        except Exception:
            log(f"operator log ({op.log_path}), last lines:\n{op.tail()}")
            raise
        finally:
            self.sampler.pid = None
            await asyncio.to_thread(op.kill if kill else op.stop)

    def watcher(self, namespace: str) -> Watcher:
        """A watch on the namespace's AgentTasks (stopped at the end of the run at the latest)."""
        w = Watcher(self.cluster.server, self.cluster.pki, namespace, self.own)
        self.watchers.append(w)
        return w

    def spec(self, namespace: str, name: str, **kw: Any) -> dict[str, Any]:
        """A benchmark task's spec."""
        assert self.fake is not None
        return task_spec(namespace, name, self.fake.tool_url, **kw)

    def check_succeeded(self, watcher: Watcher, what: str) -> int:
        """Note tasks that failed; return how many."""
        failed = {n: s for n, (_, phase, s) in watcher.done.items() if phase != "Succeeded"}
        if failed:
            name, status = next(iter(failed.items()))
            self.report.note(
                f"{what}: {len(failed)} task(s) Failed, e.g. {name}: "
                f"{status.get('reason')}: {status.get('message') or status.get('error')}"
            )
        return len(failed)

    # --- 1. floor ---

    async def measure_floor(self) -> None:
        """Raw merge-PATCHes of /status on throwaway AgentTasks no operator watches."""
        a = self.args
        ns = await new_namespace(self.api, "bench-floor")
        co = client.CustomObjectsApi(self.api)
        names = [f"floor-{i}" for i in range(a.floor_writers)]
        for name in names:
            body = task_body(name, self.spec(ns, name, iterations=THROUGHPUT_ITERATIONS))
            await co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

        def status(i: int) -> dict[str, Any]:
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {
                "phase": "Running",
                "attempts": 1,
                "iterations": i // 2,
                "toolCalls": i // 2,
                "currentStep": {"kind": "LLM", "iteration": i, "startTime": now},
                "message": f"floor write {i}",
            }

        async def writer(name: str, count: int, latencies: list[float] | None) -> None:
            obj = await co.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            rv = obj["metadata"]["resourceVersion"]
            for i in range(count):
                body = {"metadata": {"resourceVersion": rv}, "status": status(i)}
                t = time.monotonic()
                obj = await co.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, name, body, _content_type=MERGE
                )
                if latencies is not None:
                    latencies.append(time.monotonic() - t)
                rv = obj["metadata"]["resourceVersion"]

        log(f"floor: {a.floor_patches} sequential PATCHes, then {a.floor_writers} writers")
        await writer(names[0], 30, None)  # warm up connections and caches
        apiserver = self.cluster.procs["kube-apiserver"].pid
        before = self.cpu()
        cpu0 = cpu_seconds(apiserver)
        tf = time.monotonic()
        latencies: list[float] = []
        await writer(names[0], a.floor_patches, latencies)
        per_writer = a.floor_concurrent_patches // a.floor_writers
        t0 = time.monotonic()
        await asyncio.gather(*(writer(n, per_writer, None) for n in names))
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(apiserver) - cpu0
        rest = self.cpu()["(rest of the machine)"] - before["(rest of the machine)"]
        self.report.note(
            f"floor: the rest of the machine (not this benchmark's processes) used "
            f"{100 * rest / (time.monotonic() - tf):.0f} % of one core meanwhile"
        )
        total = a.floor_patches + per_writer * a.floor_writers
        # The concurrent run's GETs (one per writer) are PATCHes' worth of CPU here, too.
        self.floor = Floor(
            median=statistics.median(latencies),
            p90=percentile(latencies, 0.9),
            throughput=per_writer * a.floor_writers / elapsed,
            apiserver_cpu=cpu / total,
        )
        f = self.floor
        self.report.row(
            f"raw status PATCH: median latency ({a.floor_patches} sequential)",
            f"{ms(f.median)} (p90 {ms(f.p90)})",
            "(floor)",
        )
        self.report.row(
            f"raw status PATCH: throughput, {a.floor_writers} concurrent writers",
            f"{f.throughput:.0f} PATCH/s",
            "(floor)",
        )
        self.report.row("kube-apiserver CPU per raw PATCH", ms(f.apiserver_cpu), "(floor)")

    # --- 2. sequential ---

    async def measure_sequential(self) -> None:
        """One task of many steps, the fake answering at once: the overhead of one step."""
        steps = self.args.seq_steps
        iterations = (steps - 1) // 2
        steps = steps_of(iterations)
        ns, name = "bench-seq", "seq"
        log(f"sequential: one task of {steps} steps")
        async with self.operating(ns):
            watcher = self.watcher(ns)
            watcher.start()
            await watcher.ready.wait()
            before = await self.snap()
            await create_tasks(
                self.api, ns, {name: self.spec(ns, name, iterations=iterations)}, self.own, 1
            )
            await watcher.wait_for([name], 60 + steps * 2.0, "sequential task")
            cpu_end = self.cpu()
            done = watcher.done[name][0]
            await asyncio.sleep(1.0)  # the writes after the end (finalizer, Event)
            after = await self.snap()
            await watcher.stop()
        await self.requests.poll()
        first = self.requests.first(f"{ns}/{name}")
        self.check_succeeded(watcher, "sequential")
        assert first is not None
        per_step = (done - first) / steps
        self.costs["sequential"] = self.cost(before, after, steps, cpu_end)
        floor = self.floor.median if self.floor else None
        self.report.row(
            f"sequential task ({steps} steps): overhead per step",
            ms(per_step) + (f" = {per_step / floor:.1f}x the floor" if floor else ""),
            "≤ 3x the floor" + (f" (≤ {ms(3 * floor)})" if floor else ""),
            per_step <= 3 * floor if floor else None,
        )

    # --- growth ---

    async def measure_growth(self) -> None:
        """One long task whose tool answers 20 KiB: etcd bytes per step, early vs late."""
        a = self.args
        iterations = a.growth_steps // 2
        steps = steps_of(iterations)
        ns, name = "bench-growth", "growth"
        key = f"{ns}/{name}"
        size = a.growth_result_kib * KIB
        log(f"growth: one task of {steps} steps, tool results of {a.growth_result_kib} KiB")
        async with self.operating(ns):
            watcher = self.watcher(ns)
            watcher.start()
            await watcher.ready.wait()
            spec = self.spec(ns, name, iterations=iterations, size=size, probe=True)
            await create_tasks(self.api, ns, {name: spec}, self.own, 1)
            await watcher.wait_for([name], 120 + steps * 3.0, "growth task")
            await asyncio.sleep(1.0)
            final = await self.scraper.etcd()
            await watcher.stop()
        self.check_succeeded(watcher, "growth")
        probes = sorted(await self.requests.probes(key))
        if len(probes) < 2:
            raise RuntimeError(f"growth: only {len(probes)} probes recorded")
        values = [p[3] for p in probes] + [final.put_bytes]
        deltas = [values[i + 1] - values[i] for i in range(len(probes))]
        own = [float(p[4]) for p in probes]
        w = min(a.growth_window, len(deltas) // 2)

        def window(sl: slice) -> tuple[float, float, float]:
            d, o = deltas[sl], own[sl]
            return (
                statistics.mean(d),
                statistics.mean(o),
                max(x - y for x, y in zip(d, o, strict=True)),
            )

        first_w, last_w = window(slice(0, w)), window(slice(len(deltas) - w, len(deltas)))
        all_w = window(slice(0, len(deltas)))
        transcript, written = sum(own), sum(deltas)
        self.report.row(
            f"growth: {steps}-step task, {a.growth_result_kib} KiB tool results: "
            f"etcd bytes per step, first {w} → last {w} steps",
            f"{kib(first_w[0])} → {kib(last_w[0])} ({last_w[0] / first_w[0]:.1f}x); "
            f"worst step: {kib(all_w[2])} over its own new content",
            "flat; ≤ own new content + 16 KiB per step",
            all_w[2] <= 16 * KIB,
        )
        self.report.table(
            f"Growth test: etcd bytes put per step ({steps} steps; "
            f"{written / MIB:.1f} MiB put into etcd for {transcript / MIB:.2f} MiB of new content)",
            ["steps", "etcd bytes/step (mean)", "own new content/step (mean)", "worst excess"],
            [
                [f"first {w}", kib(first_w[0]), kib(first_w[1]), kib(first_w[2])],
                [f"last {w}", kib(last_w[0]), kib(last_w[1]), kib(last_w[2])],
                [f"all {len(deltas)}", kib(all_w[0]), kib(all_w[1]), kib(all_w[2])],
            ],
        )

    # --- 3/4. throughput ---

    async def measure_throughput(self, n: int) -> None:
        """``n`` tasks of 9 steps created at once."""
        steps_each = steps_of(THROUGHPUT_ITERATIONS)
        ns = f"bench-tp-{n}"
        names = [f"t{i:05d}" for i in range(n)]
        specs = {nm: self.spec(ns, nm, iterations=THROUGHPUT_ITERATIONS) for nm in names}
        steps = n * steps_each
        log(f"throughput: {n} tasks x {steps_each} steps created at once")
        async with self.operating(ns):
            watcher = self.watcher(ns)
            watcher.start()
            await watcher.ready.wait()
            before = await self.snap()
            t0 = time.monotonic()
            created = await create_tasks(
                self.api, ns, specs, self.own, self.args.create_concurrency
            )
            t_created = time.monotonic()
            log(f"  {n} creates took {secs(t_created - t0)}")
            await watcher.wait_for(names, 120 + steps / 5.0, "tasks")
            cpu_end = self.cpu()
            t_end = max(watcher.done[nm][0] for nm in names)
            await asyncio.sleep(1.5)
            after = await self.snap()
            await watcher.stop()
        await self.requests.poll()
        failed = self.check_succeeded(watcher, f"{n} tasks")
        seen = self.requests.kinds[f"{ns}:llm"] + self.requests.kinds[f"{ns}:tool"]
        if seen != steps:
            self.report.note(
                f"{n} tasks: the fake model saw {seen} requests for {steps} steps "
                "(retries or repeated requests)"
            )
        cost = self.cost(before, after, steps, cpu_end)
        self.costs[f"{n} tasks"] = cost
        rate = steps / (t_end - t0)
        fl = self.floor
        self.report.row(
            f"{n} tasks x {steps_each} steps created at once: steps/s",
            f"{rate:.0f}"
            + (f" = {100 * rate / fl.throughput:.0f} % of raw PATCH throughput" if fl else "")
            + (f" ({failed} failed)" if failed else ""),
            "≥ 50 % of raw PATCH throughput" + (f" (≥ {fl.throughput / 2:.0f})" if fl else ""),
            rate >= fl.throughput / 2 if fl else None,
        )
        delays = []
        for nm in names:
            first = self.requests.first(f"{ns}/{nm}")
            if first is not None:
                delays.append(first - created[nm][1])
        p50, worst = percentile(delays, 0.5), max(delays)
        g50, gmax = (1.0, 3.0) if n <= 200 else (3.0, 10.0)
        self.report.row(
            f"{n} tasks created at once → first model request, p50 / max",
            f"{secs(p50)} / {secs(worst)}",
            f"p50 ≤ {g50:g} s, max ≤ {gmax:g} s",
            p50 <= g50 and worst <= gmax,
        )
        api_cpu = cost.cpu["kube-apiserver"] / steps
        op_cpu = cost.cpu.get("operator", 0.0) / steps
        patches = f" = {api_cpu / fl.apiserver_cpu:.1f} raw PATCHes' worth" if fl else ""
        self.report.row(
            f"{n} tasks: CPU per step, kube-apiserver / operator",
            f"{ms(api_cpu)} / {ms(op_cpu)} (apiserver{patches})",
            "apiserver ≤ 2 raw PATCHes' worth" + (f" (≤ {ms(2 * fl.apiserver_cpu)})" if fl else ""),
            api_cpu <= 2 * fl.apiserver_cpu if fl else None,
        )
        rss = self.sampler.peak(t0, t_end)
        self.report.note(
            f"{n} tasks: creates took {secs(t_created - t0)}; run {secs(t_end - t0)}; "
            f"operator peak RSS during the run {rss / MIB:.0f} MiB"
        )

    # --- sharding: the same load on several replicas ---

    async def measure_replicas(self, n: int, replicas: int) -> None:
        """``n`` tasks of 9 steps on ``replicas`` operator processes sharing them (Leases)."""
        steps_each = steps_of(THROUGHPUT_ITERATIONS)
        ns = f"bench-rep{replicas}-{n}"
        names = [f"t{i:05d}" for i in range(n)]
        specs = {nm: self.spec(ns, nm, iterations=THROUGHPUT_ITERATIONS) for nm in names}
        steps = n * steps_each
        log(f"replicas: {n} tasks x {steps_each} steps on {replicas} replicas")
        await new_namespace(self.api, ns)
        assert self.fake is not None
        ops = [
            OperatorProcess(
                self.cluster.kubeconfig,
                ns,
                self.workdir / f"operator-{ns}-r{i}.log",
                self.fake.base_url,
                self.workdir / "workspace",
                self.operator_src,
                {"AGENTTASK_REPLICA_ID": f"r{i}", "POD_NAMESPACE": ns},
            )
            for i in range(replicas)
        ]
        self.operators += ops
        try:
            for op in ops:
                op.start()
            for op in ops:
                await op.wait_started()
            await asyncio.sleep(2.0)
            watcher = self.watcher(ns)
            watcher.start()
            await watcher.ready.wait()
            before = await self.snap()
            t0 = time.monotonic()
            await create_tasks(self.api, ns, specs, self.own, self.args.create_concurrency)
            await watcher.wait_for(names, 120 + steps / 5.0, "tasks")
            cpu_end = self.cpu()
            t_end = max(watcher.done[nm][0] for nm in names)
            await asyncio.sleep(1.5)
            after = await self.snap()
            await watcher.stop()
        finally:
            for op in ops:
                await asyncio.to_thread(op.stop)
        failed = self.check_succeeded(watcher, f"{n} tasks on {replicas} replicas")
        cost = self.cost(before, after, steps, cpu_end)
        self.costs[f"{n} tasks, {replicas} replicas"] = cost
        owners = Counter(
            str((s.get("owner") or {}).get("replica")) for _, _, s in watcher.done.values()
        )
        one = self.costs.get(f"{n} tasks")
        self.report.row(
            f"{n} tasks on {replicas} replicas: API requests per step (1 replica)",
            f"{cost.api_per_step:.2f}"
            + (f" ({one.api_per_step:.2f})" if one else "")
            + f"; {steps / (t_end - t0):.0f} steps/s"
            + (f" ({failed} failed)" if failed else ""),
            "no extra write per step",
            None,
        )
        self.report.note(
            f"{n} tasks on {replicas} replicas: tasks finished per replica {dict(owners)}"
        )

    # --- 5/6. in flight: RSS and SIGKILL ---

    async def measure_inflight(self, n: int) -> None:
        """``n`` tasks kept in flight by a slow tool: peak RSS, then SIGKILL and resume."""
        ns = f"bench-if-{n}"
        names = [f"f{i:05d}" for i in range(n)]
        keys = [f"{ns}/{nm}" for nm in names]
        specs = {
            nm: self.spec(ns, nm, iterations=INFLIGHT_ITERATIONS, tool_delay=INFLIGHT_TOOL_DELAY)
            for nm in names
        }
        log(f"in flight: {n} tasks, tool answering in {INFLIGHT_TOOL_DELAY:g} s")
        async with self.operating(ns, kill=True) as op:
            t0 = time.monotonic()
            await create_tasks(self.api, ns, specs, self.own, self.args.create_concurrency)
            deadline = time.monotonic() + self.args.inflight_timeout
            last = 0.0
            while True:
                waiting = sum(1 for k in keys if k not in self.requests.tool_seen)
                if not waiting:
                    break
                if time.monotonic() > deadline:
                    self.report.note(
                        f"{n} in flight: {waiting} tasks never reached their first tool call "
                        f"within {self.args.inflight_timeout:.0f}s; measured anyway"
                    )
                    break
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    log(f"  {n - waiting}/{n} tasks in flight (had a tool call)")
                await asyncio.sleep(0.2)
            log(f"  {n - waiting}/{n} in flight after {secs(time.monotonic() - t0)}; holding 3 s")
            await asyncio.sleep(3.0)
            rss = self.sampler.peak(t0, time.monotonic())
            log("  SIGKILL")
            op.kill()
            t_restart = op.start()
            after = self.requests.since(t_restart)
            self.sampler.pid = op.pid
            await op.wait_started(120)
            started = time.monotonic() - t_restart
            target = math.ceil(0.95 * n)
            deadline = time.monotonic() + self.args.inflight_timeout
            t95: float | None = None
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                got = sum(k in after for k in keys)
                if got == n:
                    break
                if t95 is None and got >= target:
                    t95 = time.monotonic()
                if t95 is not None and time.monotonic() > t95 + 3.0:
                    break  # 95 % are there; give the rest a moment, not forever
            rss_after = self.sampler.peak(t_restart, time.monotonic())
        times = sorted(after[k] - t_restart for k in keys if k in after)
        resumed95 = times[target - 1] if len(times) >= target else None
        self.report.row(
            f"operator peak RSS, {n} tasks in flight",
            f"{rss / MIB:.0f} MiB (after the restart: {rss_after / MIB:.0f} MiB)",
            "≤ 200 MiB with 1,000 in flight",
            rss <= 200 * MIB if n >= 1000 else None,
        )
        self.report.row(
            f"SIGKILL with {n} tasks in flight → 95 % took their next step",
            (secs(resumed95) if resumed95 is not None else f"> {self.args.inflight_timeout:.0f} s")
            + f" (operator up after {secs(started)}; p50 {secs(percentile(times, 0.5))})",
            "≤ 10 s with 1,000 in flight",
            (resumed95 is not None and resumed95 <= 10.0) if n >= 1000 else None,
        )

    # --- the run ---

    async def run(self) -> Report:
        """Every figure asked for, in one run."""
        a = self.args
        self.api = await api_client(self.cluster.kubeconfig)
        self.scraper = Scraper(self.cluster.server, self.cluster.pki, self.cluster.etcd_url)
        await self.scraper.open()
        log(f"etcd counts bytes put in {self.scraper.put_metric}")
        (self.workdir / "workspace").mkdir(exist_ok=True)
        self.fake = await asyncio.to_thread(FakeProcess(self.workdir, self.cluster.etcd_url).start)
        self.requests = Requests(self.fake.url)
        self.requests.start()
        self.sampler.start()
        try:
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
            if "floor" in a.figures:
                steps.append(("floor", self.measure_floor))
            if "seq" in a.figures:
                steps.append(("sequential", self.measure_sequential))
            if "growth" in a.figures:
                steps.append(("growth", self.measure_growth))
            if "throughput" in a.figures:
                for n in a.tasks:
                    steps.append((f"throughput {n}", functools.partial(self.measure_throughput, n)))
            if "replicas" in a.figures:
                n = a.tasks[0]
                steps.append((f"replicas {n}", functools.partial(self.measure_replicas, n, 3)))
            if "inflight" in a.figures:
                for n in a.inflight_tasks:
                    steps.append((f"in flight {n}", functools.partial(self.measure_inflight, n)))
            for what, step in steps:
                try:
                    await step()
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as e:
                    log(traceback.format_exc())
                    self.report.note(f"{what}: failed: {type(e).__name__}: {e}")
                    self.report.row(what, f"failed: {type(e).__name__}", "—", False)
            self.summarise_costs()
        finally:
            for w in self.watchers:
                await w.stop()
            await self.sampler.stop()
            await self.requests.stop()
            await self.scraper.close()
            await self.api.close()
            for op in self.operators:
                op.kill()
            self.fake.stop()
        return self.report

    def summarise_costs(self) -> None:
        """API requests and etcd bytes per step, and the detail tables."""
        if not self.costs:
            return
        runs = list(self.costs)
        per_step = " / ".join(f"{self.costs[r].api_per_step:.1f}" for r in runs)
        self.report.row(
            f"API requests per step ({' / '.join(runs)})",
            per_step,
            "≤ 2",
            all(self.costs[r].api_per_step <= 2 for r in runs),
        )
        etcd = " / ".join(kib(self.costs[r].etcd_bytes / self.costs[r].steps) for r in runs)
        self.report.row(
            f"etcd bytes put per step ({' / '.join(runs)})",
            etcd,
            "≤ own new content (< 1 KiB here) + 16 KiB",
            all(self.costs[r].etcd_bytes / self.costs[r].steps <= 17 * KIB for r in runs),
        )

        def rate(r: str, keys: list[ApiKey]) -> float:
            return sum(self.costs[r].api[k] for k in keys) / self.costs[r].steps

        every = {k for r in runs for k in self.costs[r].api}
        watches = [k for k in every if k[0] == "WATCH"]
        small = [  # the control plane's own background requests, mostly
            k for k in every - set(watches) if max(rate(r, [k]) for r in runs) < 0.005
        ]
        keys = sorted(
            every - set(watches) - set(small), key=lambda k: -max(rate(r, [k]) for r in runs)
        )
        rows = [
            [f"{k[0]} {k[1]}{'/' + k[2] if k[2] else ''}"] + [f"{rate(r, [k]):.2f}" for r in runs]
            for k in keys
        ]
        if small:
            rows.append(
                [f"{len(small)} others, each < 0.005"] + [f"{rate(r, small):.3f}" for r in runs]
            )
        if watches:
            rows.append(
                [f"WATCH, {len(watches)} resources (not counted)"]
                + [f"{rate(r, watches):.3f}" for r in runs]
            )
        rows.append(
            ["total (watches excluded)"] + [f"{self.costs[r].api_per_step:.2f}" for r in runs]
        )
        self.report.table(
            "API requests per step, counted by kube-apiserver (apiserver_request_total; "
            "the benchmark's own creates and watch taken out)",
            ["verb resource", *runs],
            rows,
        )
        procs = sorted({p for r in runs for p in self.costs[r].cpu})
        self.report.table(
            "CPU per step, by process (ms; all share the machine's cores)",
            ["process", *runs],
            [
                [p]
                + [f"{1000 * self.costs[r].cpu.get(p, 0) / self.costs[r].steps:.2f}" for r in runs]
                for p in procs
            ],
        )
        self.report.table(
            "etcd per step",
            ["", *runs],
            [
                ["steps"] + [str(self.costs[r].steps) for r in runs],
                ["bytes put per step"]
                + [kib(self.costs[r].etcd_bytes / self.costs[r].steps) for r in runs],
                ["db size growth over the run"]
                + [f"{self.costs[r].etcd_db_growth / MIB:.1f} MiB" for r in runs],
            ],
        )


# --- command line, machine, results


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    ap = argparse.ArgumentParser(
        prog="bench.py", description="agenttask-operator benchmark (see benchmarks/README.md)"
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--tasks", type=_sizes, default=None, help="throughput sizes (200,1000)")
    ap.add_argument(
        "--inflight-tasks", type=_sizes, default=None, help="in-flight sizes (default: --tasks)"
    )
    ap.add_argument(
        "--figures",
        default=",".join(FIGURES),
        help=f"which measurements, comma-separated: {','.join(FIGURES)} (default: all)",
    )
    ap.add_argument("--seq-steps", type=int, default=None, help="steps of the sequential task (41)")
    ap.add_argument("--growth-steps", type=int, default=None, help="steps of the growth task (200)")
    ap.add_argument("--growth-result-kib", type=int, default=20, help="growth tool result (20)")
    ap.add_argument("--growth-window", type=int, default=None, help="steps compared (20)")
    ap.add_argument("--floor-patches", type=int, default=None, help="sequential PATCHes (300)")
    ap.add_argument(
        "--floor-concurrent-patches", type=int, default=None, help="PATCHes of the writers (3200)"
    )
    ap.add_argument("--floor-writers", type=int, default=16, help="concurrent writers (16)")
    ap.add_argument("--create-concurrency", type=int, default=32, help="concurrent creates (32)")
    ap.add_argument(
        "--inflight-timeout", type=float, default=300.0, help="wait at most this long (300 s)"
    )
    ap.add_argument(
        "--operator-ref",
        default=None,
        help="benchmark the operator (and crds/) of this git revision instead of the work tree",
    )
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="write the Markdown report here (default: benchmarks/RESULTS.md; none with --quick)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args(argv)
    q = args.quick
    args.tasks = args.tasks or ([20, 50] if q else [200, 1000])
    args.inflight_tasks = args.inflight_tasks or args.tasks
    args.seq_steps = args.seq_steps or (11 if q else 41)
    args.growth_steps = args.growth_steps or (40 if q else 200)
    args.growth_window = args.growth_window or (10 if q else 20)
    args.floor_patches = args.floor_patches or (100 if q else 300)
    args.floor_concurrent_patches = args.floor_concurrent_patches or (640 if q else 3200)
    if args.results is None and not q:
        args.results = HERE / "RESULTS.md"
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = set(figures) - set(FIGURES)
    if unknown:
        ap.error(f"--figures: unknown {', '.join(sorted(unknown))}; choose from {FIGURES}")
    args.figures = figures
    args.operator_src = None
    return args


def git(*args: str) -> str:
    """Output of a git command in the repository ('' on failure)."""
    proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def commit(ref: str | None) -> str:
    """The commit measured: short hash, "+dirty" when the work tree (tracked files) differs."""
    if ref is not None:
        return f"{git('rev-parse', '--short', ref)} (--operator-ref {ref})"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def machine() -> str:
    """nproc, memory, CPU model, kernel, Python."""
    mem = cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / MIB:.1f} GiB RAM"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu or 'unknown model'}), {mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def extract(ref: str, dest: Path) -> Path:
    """``operator/`` and ``crds/`` of a git revision, unpacked under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    proc = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), ref, "operator", "crds"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: git archive {ref}: {proc.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (goals missed or not), 1 when it could not run."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="agenttask-bench-"))
    log(f"work directory {workdir} (logs)")
    crds = REPO / "crds"
    if args.operator_ref:
        src = extract(args.operator_ref, workdir / "src")
        args.operator_src, crds = src / "operator", src / "crds"
        log(f"operator and crds/ of {args.operator_ref}")

    def terminate(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started ignoring it
    started = dt.datetime.now(dt.UTC)
    load_before = "/".join(f"{x:.2f}" for x in os.getloadavg())
    t0 = time.monotonic()
    ok = False
    cluster = LocalCluster(workdir / "cluster")
    try:
        log("starting the control plane")
        with cluster:
            home = workdir / "home"
            home.mkdir()
            kubectl(cluster.kubectl, cluster.kubeconfig, home, "apply", "-f", str(crds))
            kubectl(
                cluster.kubectl,
                cluster.kubeconfig,
                home,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                str(crds),
            )
            report = asyncio.run(Bench(args, cluster, workdir).run())
        ok = True
    except KeyboardInterrupt:
        log("interrupted; everything started has been stopped")
        return 130
    finally:
        if not ok or args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    meta = [
        ("date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("commit", commit(args.operator_ref)),
        ("machine", machine()),
        (
            "command",
            "benchmarks/bench.py "
            + (" ".join(sys.argv[1:] if argv is None else argv) or "(defaults)"),
        ),
        ("duration", f"{(time.monotonic() - t0) / 60:.1f} min"),
        ("load average", f"{load_before} before, {load} after (1/5/15 min)"),
    ]
    print()
    for k, v in meta:
        print(f"{k}: {v}")
    print()
    print(report.text())
    if args.results is not None:
        args.results.write_text(report.markdown(meta))
        log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
