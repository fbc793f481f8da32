"""The image is real: the image that ``make image`` built runs the disk-space demo as the Pod would.

``make image`` (hack/image/build.sh) builds the Dockerfile with buildah on a base made from
Debian's packages. Here that image's own configuration (ENTRYPOINT, USER, WORKDIR, Env) is run
inside its own root filesystem by tests/podrun.py, set up the way the chart's Deployment asks
for it: the chart's container args and env (the model key resolved from a Secret, as the
kubelet does), the chart's writable volumes (/tmp and the workspace, host directories like
emptyDirs, group-owned by the fsGroup), the root filesystem read-only, no capabilities,
no_new_privs, and the credentials a Pod gets: a token of the chart's ServiceAccount (RBAC from
the chart) mounted at /var/run/secrets/kubernetes.io/serviceaccount with the cluster's CA, and
KUBERNETES_SERVICE_HOST/PORT pointing at the local API server. Nothing is baked into the image.

Checked: the demo task succeeds and really cleans the workspace; the process that ran it is the
image's entrypoint, as the image's non-root uid/gid with no capabilities (its /proc status);
its only writable mounts were /tmp and the workspace (its /proc mountinfo); and the image's root
filesystem is unchanged afterwards (every path's type, mode, owner, size, mtime and ctime, before
and after). The liveness endpoint answers, and the chart's RBAC was enough (no 403). A second
test shows that the read-only root and the snapshot do catch a write.

Not emulated: the Pod's own network and PID namespaces (it shares the host's, where the API
server and the model listen on 127.0.0.1), the RuntimeDefault seccomp profile, cgroup limits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo import EXAMPLE, NAME, make_workspace, start_bundled_model
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster, free_port, wait_listening

from kubehelpers import kubectl, wait_phase
from packaging_helpers import (
    docs,
    forbidden_in,
    helm_template,
    kubectl_apply,
    only,
    rbac_manifests,
    service_account_token,
    token_kubeconfig,
)
from podrun import host_path
from test_rbac import rbac_in_effect

pytestmark = pytest.mark.image

BUILD = REPO / "hack" / "image" / "build.sh"
PODRUN = Path(__file__).with_name("podrun.py")
BUILDAH = ["buildah", "--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs")]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LIVENESS = "http://0.0.0.0:8080/healthz"  # the chart's default --liveness


def buildah(*args: str) -> str:
    proc = subprocess.run(
        [*BUILDAH, *args], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image of ``make image`` (built here if need be: hack/image/build.sh, cached)."""
    proc = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, check=False, timeout=3000
    )
    assert proc.returncode == 0, f"hack/image/build.sh failed:\n{proc.stderr[-6000:]}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def rootfs(image: str) -> Iterator[Path]:
    """A working container of ``image``: its root filesystem, removed afterwards (one for the
    module: with the vfs driver each is a full copy, ~30 s)."""
    ctr = buildah("from", "--pull=never", image).strip()
    try:
        yield Path(buildah("mount", ctr).strip())
    finally:
        subprocess.run([*BUILDAH, "umount", ctr], capture_output=True, check=False)
        subprocess.run([*BUILDAH, "rm", ctr], capture_output=True, check=False)


def image_config(image: str) -> dict[str, Any]:
    """The OCI configuration of ``image``: User, Env, Entrypoint, Cmd, WorkingDir, ..."""
    config: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"][
        "config"
    ]
    return config


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` (not crossing into mounts): what any write would change."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            seen[os.path.relpath(path, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                link,
            )
    return seen


def changes(
    before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]
) -> list[str]:
    return sorted(
        [f"+ /{p}" for p in after.keys() - before.keys()]
        + [f"- /{p}" for p in before.keys() - after.keys()]
        + [f"~ /{p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )


def emptydir(path: Path, fs_group: int) -> Path:
    """A host directory as the kubelet makes an emptyDir for a Pod with ``fsGroup``: group-owned,
    group-writable, setgid on directories."""
    path.mkdir(exist_ok=True)
    for p in [path, *path.rglob("*")]:
        os.chown(p, -1, fs_group)
        extra = 0o2070 if p.is_dir() else 0o060
        p.chmod(stat.S_IMODE(p.stat().st_mode) | extra | (0o777 if p == path else 0))
    return path


def which_in_image(root: Path, env: dict[str, str], command: str) -> str:
    """Where the image's PATH finds ``command``, as a path inside the image."""
    for directory in env["PATH"].split(":"):
        if host_path(root, f"{directory}/{command}").is_file():
            return f"{directory}/{command}"
    raise AssertionError(f"{command} is not on the image's PATH {env['PATH']}")


async def container_env(
    api: client.ApiClient, namespace: str, entries: list[dict[str, Any]], pod_name: str
) -> dict[str, str]:
    """The container's env entries resolved as the kubelet does (a value, the Pod's own name
    or namespace, or a Secret's key).
    """
    env: dict[str, str] = {}
    pod_fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    for e in entries:
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        if "fieldRef" in e["valueFrom"]:
            env[e["name"]] = pod_fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        secret = await client.CoreV1Api(api).read_namespaced_secret(ref["name"], namespace)
        env[e["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
    return env


class PodProcess:
    """The Pod's main process: tests/podrun.py, which execs the image's entrypoint in place."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        """Write the spec; call :meth:`start`."""
        self.spec_file, self.log = workdir / "pod.json", workdir / "pod.log"
        self.spec_file.write_text(json.dumps(spec))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start; output goes to ``log``."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PODRUN), str(self.spec_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
            )

    @property
    def pid(self) -> int:
        """Its process id, which the exec kept: the operator's."""
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float) -> None:
        """Wait until it has printed ``marker``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            assert self.proc.poll() is None, f"the Pod's process exited:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} in time:\n{self.output()[-4000:]}"
            time.sleep(0.2)

    def status(self) -> dict[str, str]:
        """Its /proc/<pid>/status: Uid, Gid, Groups, Cap*, NoNewPrivs, ..."""
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def cmdline(self) -> list[str]:
        """Its command line."""
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().decode().split("\0")[:-1]

    def writable_mounts(self) -> set[str]:
        """Its mount points that are not read-only, other than /proc and /dev's."""
        found: set[str] = set()
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.partition(" - ")[0].split()
            mount_point, options = fields[4], fields[5].split(",")
            if (
                "ro" not in options
                and mount_point != "/proc"
                and mount_point.split("/")[1] != "dev"
            ):
                found.add(mount_point)
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def healthz(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own 127.0.0.1 URL
        status: int = resp.status
        return status


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own 127.0.0.1 URL
        text: str = resp.read().decode()
        return text


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only-root", "writable-root"])
def test_podrun_root_and_snapshot_see_a_write(
    rootfs: Path, tmp_path: Path, read_only: bool
) -> None:
    """The checks below are awake: with the root read-only a write outside the volumes fails;
    with it writable the same write lands in the image's root filesystem and the snapshot
    shows it, while a write to a volume does neither."""
    volume = emptydir(tmp_path / "volume", 65532)
    pod = PodProcess(
        {
            "root": str(rootfs),
            "readOnlyRoot": read_only,
            "mounts": [{"source": str(volume), "target": "/tmp", "readOnly": False}],
            "workdir": "/",
            "uid": 65532,
            "gid": 65532,
            "groups": [],
            "env": {"PATH": "/usr/bin:/bin"},
            "argv": ["sh", "-c", "touch /tmp/volume-file; touch /workspace/root-file; true"],
        },
        tmp_path,
    )
    before = snapshot(rootfs)
    pod.start()
    assert pod.proc is not None and pod.proc.wait(30) == 0, pod.output()
    assert (volume / "volume-file").exists()
    if read_only:
        assert "Read-only file system" in pod.output(), pod.output()
        assert changes(before, snapshot(rootfs)) == []
    else:
        assert changes(before, snapshot(rootfs)) == ["+ /workspace/root-file", "~ /workspace"]
        (rootfs / "workspace" / "root-file").unlink()


def chart_pod(home: Path, namespace: str, model_url: str) -> dict[str, Any]:
    """The pod template of the chart's Deployment, a release in ``namespace`` that watches it."""
    values = {"watchNamespaces": [namespace], "model": {"baseUrl": model_url}}
    objs = docs(helm_template(home, namespace, values, release=f"img-{namespace}"))
    pod: dict[str, Any] = only(objs, "Deployment")["spec"]["template"]["spec"]
    return pod


def service_account_volume(directory: Path, token: str, ca: Path, namespace: str) -> Path:
    """The files of a Pod's projected ServiceAccount volume (mode 0644, as its defaultMode)."""
    directory.mkdir()
    (directory / "token").write_text(token)
    shutil.copy(ca, directory / "ca.crt")
    (directory / "namespace").write_text(namespace)
    for f in directory.iterdir():
        f.chmod(0o644)
    return directory


def check_image_contents(root: Path) -> None:
    """Only the virtualenv reached the image: no pip, no sources, no wheels, no build venv."""
    site = host_path(root, "/opt/venv/lib/python3.11/site-packages")
    assert not [p.name for p in site.iterdir() if p.name.split("-")[0] in ("pip", "wheel")]
    for leftover in ("/src", "/wheels", "/opt/tools", "/etc/pip.conf", "/etc/pip-build-ca.pem"):
        assert not host_path(root, leftover).exists(), leftover


@pytest.mark.cluster
async def test_image_runs_the_demo_as_the_chart_pod_would(
    cluster: LocalCluster,
    crd: Path,
    api: client.ApiClient,
    namespace: str,
    image: str,
    rootfs: Path,
    tmp_path: Path,
) -> None:
    config = image_config(image)
    uid, gid = (int(x) for x in config["User"].split(":"))
    assert uid != 0 and gid != 0, config["User"]
    check_image_contents(rootfs)

    home = tmp_path / "home"
    home.mkdir()
    model_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTTASK_"))}
    model, _, model_url = start_bundled_model(model_env)
    pod: PodProcess | None = None
    try:
        spec = chart_pod(home, namespace, model_url)
        (container,) = spec["containers"]
        pod_sc, sc = spec["securityContext"], container["securityContext"]
        assert (pod_sc["runAsUser"], pod_sc["runAsGroup"]) == (uid, gid)  # chart == image
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        fs_group = int(pod_sc["fsGroup"])

        # What the chart installs and what the Pod is given: RBAC for its ServiceAccount, the
        # default model key's Secret, a token of the ServiceAccount (TokenRequest, as the
        # kubelet asks for the projected volume).
        release = f"img-{namespace}"
        kubectl_apply(cluster, home, rbac_manifests(home, namespace, [namespace], release=release))
        key = client.V1Secret(
            metadata=client.V1ObjectMeta(name="openai-api-key"),
            string_data={"apiKey": "demo-no-key-needed"},
        )
        await client.CoreV1Api(api).create_namespaced_secret(namespace, key)
        token = await service_account_token(api, namespace, spec["serviceAccountName"])
        await rbac_in_effect(
            token_kubeconfig(cluster, token, tmp_path / "sa.kubeconfig"), namespace
        )

        # Volumes: the chart's emptyDirs (the workspace filled as `make demo` does) and the
        # ServiceAccount's, read-only.
        mount_paths = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert set(mount_paths) == {v["name"] for v in spec["volumes"]} == {"tmp", "workspace"}
        volumes = {name: tmp_path / f"volume-{name}" for name in mount_paths}
        make_workspace(volumes["workspace"])
        for d in volumes.values():
            emptydir(d, fs_group)
        sa = service_account_volume(
            tmp_path / "serviceaccount", token, cluster.pki / "ca.crt", namespace
        )
        mounts = [
            {"source": str(volumes[name]), "target": path, "readOnly": False}
            for name, path in mount_paths.items()
        ]
        mounts.append({"source": str(sa), "target": SA_DIR, "readOnly": True})
        host_path(rootfs, SA_DIR).mkdir(parents=True, exist_ok=True)  # a runtime makes it too

        # The container: the image's entrypoint with the chart's args, the image's env with the
        # chart's on top, and the in-cluster API address the kubelet sets.
        port = free_port()
        assert container["args"][:2] == ["--liveness", LIVENESS]  # 8080 may be taken here
        args = [a.replace(LIVENESS, f"http://127.0.0.1:{port}/healthz") for a in container["args"]]
        metrics_port = free_port()  # and the chart's 9090 may be taken too
        assert args[args.index("--metrics-port") + 1] == "9090"
        args[args.index("--metrics-port") + 1] = str(metrics_port)
        argv = [*config["Entrypoint"], *(args or config.get("Cmd") or [])]
        env = dict(e.split("=", 1) for e in config["Env"])
        env |= await container_env(api, namespace, container["env"], f"{release}-pod")
        env |= {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(cluster.api_port),
        }
        assert env["AGENTTASK_WORKSPACE"] == mount_paths["workspace"]
        pod = PodProcess(
            {
                "root": str(rootfs),
                "readOnlyRoot": sc["readOnlyRootFilesystem"],
                "mounts": mounts,
                "workdir": config.get("WorkingDir") or "/",
                "uid": uid,
                "gid": gid,
                "groups": [fs_group],
                "env": env,
                "argv": argv,
            },
            tmp_path,
        )

        before = snapshot(rootfs)
        pod.start()
        await asyncio.to_thread(pod.wait_for, "agenttask-operator started", 60)

        # The process is the image's entrypoint ([#! interpreter, script on the image's PATH,
        # args]), as the image's user and the fsGroup, without capabilities or a way to gain
        # any; only the chart's volumes are writable to it.
        status = pod.status()
        assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
        assert status["Gid"].split() == [str(gid)] * 4, status["Gid"]
        assert status["Groups"].split() == [str(fs_group)], status["Groups"]
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (caps, status[caps])
        assert status["NoNewPrivs"] == "1"
        assert pod.cmdline()[1:] == [which_in_image(rootfs, env, argv[0]), *argv[1:]]
        assert pod.writable_mounts() == {"/tmp", mount_paths["workspace"]}
        # kopf opens the liveness endpoint only after the startup handlers, which log "started".
        await asyncio.to_thread(wait_listening, port)
        assert await asyncio.to_thread(healthz, f"http://127.0.0.1:{port}/healthz") == 200

        # The disk-space demo, applied as `make demo` does.
        applied = kubectl(cluster, "apply", "-n", namespace, "-f", str(EXAMPLE))
        assert applied.returncode == 0, applied.stderr
        st = (await wait_phase(api, namespace, NAME, within=120))["status"]
        assert (st["phase"], st["iterations"]) == ("Succeeded", 3), st
        assert "I deleted 4 log files and freed 3.7 MiB" in st["result"], st["result"]
        # The image serves /metrics (prometheus-client is in it), and counted the task.
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        exposition = await asyncio.to_thread(get_text, url)
        assert 'agenttask_tasks_finished_total{phase="Succeeded",reason="Completed"} 1.0' in (
            exposition
        )
        left = [p for p in (volumes["workspace"] / "logs").rglob("*") if p.is_file()]
        assert left == [], left
        assert (volumes["workspace"] / "README.txt").exists()  # only logs/ was cleaned
        await asyncio.sleep(1)  # kopf's last bookkeeping (finalizer removal) after Succeeded
        assert pod.status()["Uid"].split() == [str(uid)] * 4
    finally:
        if pod is not None:
            pod.stop()
        model.terminate()
        model.wait(10)

    output = pod.output()
    assert "Traceback" not in output, output[-4000:]
    assert forbidden_in(output) == [], "the operator was refused something"
    # Nothing was written outside the writable volumes: the root filesystem is as it was.
    assert changes(before, snapshot(rootfs)) == []
