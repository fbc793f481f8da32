"""A real, local Kubernetes control plane for development and tests: no Docker needed.

etcd, kube-apiserver and kube-controller-manager (plus kubectl) are compiled from Go modules by
``hack/control-plane/build.sh`` and started here as local processes on free 127.0.0.1 ports, the
way controller-runtime's envtest does, with RBAC authorization and the garbage-collector,
namespace and service-account controllers. There is no scheduler and no kubelet: Pods are never
run.

Used two ways:

* ``python hack/localcluster.py up|down|status`` (``make cluster`` / ``make cluster-down``): a
  detached cluster whose admin kubeconfig is ``.cache/cluster/kubeconfig``;
* :class:`LocalCluster` as a context manager: the session fixture of the integration tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "control-plane" / "build.sh"
DEFAULT_DIR = REPO / ".cache" / "cluster"
CONTROLLERS = "garbagecollector,namespace,serviceaccount"


class ClusterError(RuntimeError):
    """The control plane could not be built or started; the message says why, in one line."""


def build_binaries() -> Path:
    """Build (or find in the cache) the control-plane binaries; return their directory."""
    if not shutil.which("go"):
        raise ClusterError(
            "Go is not installed: the local control plane is built from Go modules "
            "(need Go >= 1.24 on PATH and access to the Go module proxy)"
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if proc.returncode != 0:
        raise ClusterError(f"building the control plane failed (exit {proc.returncode}), see above")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, within: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


# --- certificates -------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(pki: Path) -> None:
    """Write a CA, the API server's serving cert, an admin client cert and SA signing keys."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agenttask-local-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    (pki / "ca.crt").write_bytes(_pem(ca))
    _write_key(pki / "ca.key", ca_key)

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        srv_key,
        ca_name,
        ca_key,
        server=True,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ],
    )
    (pki / "apiserver.crt").write_bytes(_pem(srv))
    _write_key(pki / "apiserver.key", srv_key)

    adm_key = ec.generate_private_key(ec.SECP256R1())
    adm = _cert(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
            ]
        ),
        adm_key,
        ca_name,
        ca_key,
    )
    (pki / "admin.crt").write_bytes(_pem(adm))
    _write_key(pki / "admin.key", adm_key)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig_yaml(
    server: str, pki: Path, *, user: str = "admin", token: str | None = None
) -> str:
    """Return a kubeconfig (JSON is valid YAML) for ``server`` with a cert or a bearer token."""
    auth: dict[str, str]
    if token is not None:
        auth = {"token": token}
    else:
        auth = {
            "client-certificate": str(pki / "admin.crt"),
            "client-key": str(pki / "admin.key"),
        }
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    return json.dumps(cfg, indent=2) + "\n"


# --- processes ----------------------------------------------------------------------------


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager on free ports under ``workdir``."""

    workdir: Path
    detach: bool = False
    bin_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_port: int = 0
    apiserver_args: list[str] = field(default_factory=list)  # e.g. audit logging for a test
    etcd_url: str = ""  # http://127.0.0.1:<port>; its /metrics tells what etcd stores

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.workdir / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        """The kubectl built with the control plane."""
        assert self.bin_dir is not None
        return self.bin_dir / "kubectl"

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        """Directory holding etcd.log, kube-apiserver.log and kube-controller-manager.log."""
        return self.workdir / "logs"

    @property
    def pki(self) -> Path:
        """Certificates and keys."""
        return self.workdir / "pki"

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.bin_dir is not None
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        log.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise ClusterError(
                    f"{name} exited with {p.returncode}; last lines of its log:\n" + "\n".join(tail)
                )

    def _wait(self, what: str, probe: str, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.server + probe, context=ctx, timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} ({last})")

    def start(self, timeout: float = 120.0) -> None:
        """Build if needed, then start everything and wait for readiness."""
        self.bin_dir = self.bin_dir or build_binaries()
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=local",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--endpoint-reconciler-type=none",
                "--v=1",
                *self.apiserver_args,
            ],
        )
        self.kubeconfig.write_text(kubeconfig_yaml(self.server, pki))
        self._wait("kube-apiserver /readyz", "/readyz", timeout)
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--v=1",
            ],
        )
        self._wait("namespace default", "/api/v1/namespaces/default", timeout)
        self._check_alive()
        self.started_in = time.monotonic() - t0
        state = {name: p.pid for name, p in self.procs.items()}
        (self.workdir / "state.json").write_text(
            json.dumps({"pids": state, "server": self.server, "bin": str(self.bin_dir)}) + "\n"
        )

    def stop(self) -> None:
        """Stop all processes (controller-manager first, etcd last)."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> LocalCluster:
        """Start the cluster (stopping what started if that fails)."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster."""
        self.stop()


# --- detached cluster for `make cluster` ------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(workdir: Path) -> dict[str, int] | None:
    state = workdir / "state.json"
    if not state.exists():
        return None
    pids: dict[str, int] = json.loads(state.read_text())["pids"]
    return pids if any(_alive(p) for p in pids.values()) else None


def _kill(pids: dict[str, int]) -> None:
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def up(workdir: Path) -> int:
    """Start a detached cluster in ``workdir`` unless one runs there already."""
    if _running(workdir):
        state = json.loads((workdir / "state.json").read_text())
        print(
            f"A local cluster is already running at {state['server']} (make cluster-down stops it)."
        )
        _usage(workdir, Path(state["bin"]))
        return 0
    if workdir.exists():
        shutil.rmtree(workdir)
    cluster = LocalCluster(workdir, detach=True)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    print(f"Local control plane ready at {cluster.server} in {cluster.started_in:.1f}s.")
    assert cluster.bin_dir is not None
    _usage(workdir, cluster.bin_dir)
    return 0


def link_bin(bin_dir: Path) -> Path:
    """Point ``.cache/bin`` at the cached binaries, so that kubectl has a short, stable path."""
    link = REPO / ".cache" / "bin"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(bin_dir, target_is_directory=True)
    return link


def _usage(workdir: Path, bin_dir: Path) -> None:
    link = link_bin(bin_dir)
    print(f"  export KUBECONFIG=$PWD/{os.path.relpath(workdir / 'kubeconfig')}")
    print(f"  export PATH=$PWD/{os.path.relpath(link)}:$PATH   # kubectl {bin_dir.parent.name}")
    print("  kubectl get --raw /readyz")
    print(f"Logs: {os.path.relpath(workdir / 'logs')}/  (no scheduler or kubelet: Pods never run)")


def down(workdir: Path) -> int:
    """Stop a detached cluster and remove its data."""
    pids = _running(workdir)
    if pids:
        _kill(pids)
        print("Local cluster stopped.")
    else:
        print("No local cluster was running.")
    if workdir.exists():
        shutil.rmtree(workdir)
    return 0


def status(workdir: Path) -> int:
    """Exit 0 if a detached cluster runs in ``workdir``."""
    if _running(workdir):
        print(json.loads((workdir / "state.json").read_text())["server"])
        return 0
    print("No local cluster is running.")
    return 1


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ClusterError as e:
        print(f"localcluster: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    """Command line: ``up``, ``down``, ``status`` or ``bin`` (print the binaries' directory)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("command", choices=["up", "down", "status", "bin"])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    args = ap.parse_args(argv)
    with _errors():
        if args.command == "up":
            return up(args.dir)
        if args.command == "down":
            return down(args.dir)
        if args.command == "bin":
            print(build_binaries())
            return 0
        return status(args.dir)


if __name__ == "__main__":
    sys.exit(main())
