"""The moving parts of a benchmark run: the fake model process, the operator process, a watch
on AgentTasks, the fake's request log, bulk creation of tasks, and clean shutdown of it all.
"""  # noqa: D205

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fakemodel import TOOL, task_input
from kubernetes_asyncio import client, config
from metrics import ApiKey

GROUP, VERSION, PLURAL = "agenttask.dev", "v1alpha1", "agenttasks"
REPO = Path(__file__).resolve().parent.parent
STARTED_MARKER = "agenttask-operator started"


def log(msg: str) -> None:
    """Progress, to stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def task_spec(
    namespace: str,
    name: str,
    tool_url: str,
    *,
    iterations: int,
    calls: int = 1,
    size: int = 0,
    tool_delay: float = 0.0,
    probe: bool = False,
) -> dict[str, Any]:
    """An AgentTask spec the fake model runs for ``iterations * (calls + 1) + 1`` steps."""
    params = {
        "id": f"{namespace}/{name}",
        "iterations": iterations,
        "calls": calls,
        "size": size,
        "toolDelay": tool_delay,
        "probe": probe,
    }
    return {
        "input": task_input(params),
        "model": {"name": "bench-model"},
        "tools": [
            {
                "name": TOOL,
                "description": "Do one unit of work.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "size": {"type": "integer"},
                        "delay": {"type": "number"},
                        "step": {"type": "integer"},
                        "probe": {"type": "boolean"},
                    },
                },
                "http": {"url": tool_url, "timeoutSeconds": 60},
            }
        ],
        "maxIterations": iterations + 1,
    }


def steps_of(iterations: int, calls: int = 1) -> int:
    """Steps (LLM requests + tool calls) of a task of :func:`task_spec`."""
    return iterations * (calls + 1) + 1


def task_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An AgentTask manifest."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": {"name": name},
        "spec": spec,
    }


async def api_client(kubeconfig: Path) -> client.ApiClient:
    """A kubernetes_asyncio client, the library the operator uses."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    return client.ApiClient(cfg)


# --- processes


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FakeProcess:
    """``benchmarks/fakemodel.py`` as a subprocess."""

    def __init__(self, workdir: Path, etcd_url: str) -> None:
        """Configure; call :meth:`start`."""
        self.workdir, self.etcd_url = workdir, etcd_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> FakeProcess:
        """Start and wait until it listens."""
        port_file = self.workdir / "fakemodel.port"
        with (self.workdir / "fakemodel.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("fakemodel.py")),
                    "--port-file",
                    str(port_file),
                    "--etcd-url",
                    self.etcd_url,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake model did not start; see fakemodel.log")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        """The OpenAI base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def tool_url(self) -> str:
        """The HTTP tool's URL."""
        return f"http://127.0.0.1:{self.port}/tools/{TOOL}"

    @property
    def url(self) -> str:
        """The server's root."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        _stop(self.proc)


class OperatorProcess:
    """``python -m agenttask_operator --namespace NS`` against the fake model."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        fake_base_url: str,
        workspace: Path,
        pythonpath: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """Configure; call :meth:`start`. ``extra_env``: e.g. a replica's identity."""
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.fake_base_url, self.workspace, self.pythonpath = fake_base_url, workspace, pythonpath
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start (again); returns the monotonic time just before the process was spawned."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTTASK_"))}
        env |= {
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "OPENAI_BASE_URL": self.fake_base_url,
            "OPENAI_API_KEY": "sk-bench",
            "AGENTTASK_WORKSPACE": str(self.workspace),
        } | self.extra_env
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start #{self.starts} =====\n".encode())
            t = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agenttask_operator", "--namespace", self.namespace],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return t

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    async def wait_started(self, within: float = 60.0) -> None:
        """Wait until this start logged that it runs."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if text.count(STARTED_MARKER) >= self.starts:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"the operator exited with {self.proc.returncode}:\n{text[-3000:]}"
                )
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the operator did not log {STARTED_MARKER!r} within {within:.0f}s")

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        _stop(self.proc)

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# --- the fake's request log


@dataclass
class Requests:
    """Every request the fake model saw, per task (``namespace/name``), polled in the background."""

    base: str
    times: dict[str, list[float]] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)  # "<namespace>:<llm|tool>"
    tool_seen: set[str] = field(default_factory=set)  # tasks that had a tool request
    mark: float = float("inf")  # see :meth:`since`
    after_mark: dict[str, float] = field(default_factory=dict)
    count: int = 0
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Start polling every 0.1 s."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.poll()
            await asyncio.sleep(0.1)

    async def poll(self) -> None:
        """Fetch what is new."""
        assert self._session is not None
        async with self._session.get(f"{self.base}/bench/events?since={self.count}") as resp:
            data = await resp.json()
        for t, key, kind, _ in data["events"]:
            self.times.setdefault(key, []).append(t)
            self.kinds[f"{key.split('/')[0]}:{kind}"] += 1
            if kind == "tool":
                self.tool_seen.add(key)
            if t >= self.mark and key not in self.after_mark:
                self.after_mark[key] = t
        self.count = data["next"]

    async def probes(self, key: str) -> list[tuple[float, str, int, float, int]]:
        """The probes of one task: (time, kind, iteration, etcd put bytes before, own bytes)."""
        assert self._session is not None
        async with self._session.get(f"{self.base}/bench/probes?since=0") as resp:
            data = await resp.json()
        return [(p[0], p[2], p[3], p[4], p[5]) for p in data["probes"] if p[1] == key]

    def first(self, key: str) -> float | None:
        """When the task's first request came."""
        t = self.times.get(key)
        return t[0] if t else None

    def since(self, mark: float) -> dict[str, float]:
        """From now on, record each task's first request at or after ``mark`` (monotonic) in
        the dict returned (requests arrive, and are logged, in time order).
        """  # noqa: D205
        self.mark, self.after_mark = mark, {}
        return self.after_mark

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()


# --- a watch on a namespace's AgentTasks

TERMINAL = ("Succeeded", "Failed")


class Watcher:
    """Records when each AgentTask of a namespace was first seen terminal (raw watch, aiohttp)."""

    def __init__(self, server: str, pki: Path, namespace: str, own: Counter[ApiKey]) -> None:
        """Configure; call :meth:`start`. ``own`` counts the requests it makes."""
        self.server, self.namespace, self.own = server, namespace, own
        self.ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.done: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Start watching in the background."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._task = asyncio.create_task(self._run())

    def _seen(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        if status.get("phase") in TERMINAL and name not in self.done:
            self.done[name] = (time.monotonic(), status["phase"], status)
            self.changed.set()

    async def _run(self) -> None:
        assert self._session is not None
        url = f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    self.own[("LIST", PLURAL, "")] += 1
                    async with self._session.get(url, ssl=self.ssl) as resp:
                        resp.raise_for_status()
                        listed = await resp.json()
                    for item in listed.get("items") or []:
                        self._seen(item)
                    rv = listed["metadata"]["resourceVersion"]
                self.own[("WATCH", PLURAL, "")] += 1
                params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "3600"}
                async with self._session.get(url, params=params, ssl=self.ssl) as resp:
                    resp.raise_for_status()
                    self.ready.set()
                    rv = await self._stream(resp, rv)
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as e:
                log(f"watch of {self.namespace}: {type(e).__name__}: {e}; again")
                rv = None
                await asyncio.sleep(0.5)

    async def _stream(self, resp: aiohttp.ClientResponse, rv: str) -> str | None:
        """Read watch events until the stream ends; the resourceVersion to go on from (None:
        list again, the version is too old).
        """  # noqa: D205
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    return None
                obj = event.get("object") or {}
                rv = obj["metadata"]["resourceVersion"]
                self._seen(obj)
        return rv

    async def wait_for(self, names: Iterable[str], within: float, what: str = "tasks") -> None:
        """Wait until every task of ``names`` ended (or time out, saying how far it got)."""
        wanted = set(names)
        deadline = time.monotonic() + within
        last_report = time.monotonic()
        while not wanted <= self.done.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                missing = len(wanted - self.done.keys())
                raise TimeoutError(
                    f"{missing} of {len(wanted)} {what} did not end in {within:.0f}s"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 5.0))
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(f"  {len(wanted & self.done.keys())}/{len(wanted)} {what} ended")

    async def stop(self) -> None:
        """Stop watching (again: no-op)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- bulk creation


async def create_tasks(
    api: client.ApiClient,
    namespace: str,
    specs: dict[str, dict[str, Any]],
    own: Counter[ApiKey],
    concurrency: int = 32,
) -> dict[str, tuple[float, float]]:
    """Create the tasks, ``concurrency`` at a time; per task, when its create was sent and when
    it returned (monotonic).
    """  # noqa: D205
    co = client.CustomObjectsApi(api)
    queue = list(specs.items())
    queue.reverse()
    times: dict[str, tuple[float, float]] = {}

    async def worker() -> None:
        while queue:
            name, spec = queue.pop()
            t0 = time.monotonic()
            own[("POST", PLURAL, "")] += 1
            await co.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, task_body(name, spec)
            )
            times[name] = (t0, time.monotonic())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


async def new_namespace(api: client.ApiClient, name: str) -> str:
    """Create a namespace (ignoring that it exists)."""
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    with contextlib.suppress(client.ApiException):
        await client.CoreV1Api(api).create_namespace(body)
    return name


def kubectl(kubectl_bin: Path, kubeconfig: Path, home: Path, *args: str) -> None:
    """Run kubectl; raise with its output when it fails."""
    proc = subprocess.run(
        [str(kubectl_bin), *args],
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
