"""Start a process inside an image's root filesystem the way a container runtime starts a Pod's.

Run as root: ``python tests/podrun.py SPEC.json``. In a mount namespace of its own it bind-mounts
the root filesystem onto itself read-only (``readOnlyRootFilesystem``), mounts /proc, a /dev with
the usual devices, and the Pod's volumes (host directories, each read-write or read-only), then
chroots, changes to the working directory, drops every capability from the bounding set, sets
``no_new_privs`` (``allowPrivilegeEscalation: false``), takes the uid, gid and supplementary
groups, and execs the command found on the image's PATH. The exec keeps the process id, so the
caller's ``Popen.pid`` is the Pod's main process, and ``/proc/<pid>/status`` shows what it runs as.

It shares the host's network (the API server and the model listen on 127.0.0.1) and process
table. The mount points must exist in the root filesystem: a runtime creates them before the
container starts, and so does the caller (:func:`host_path` finds where), so that this script
writes nothing there itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import posixpath
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), None), f"mount {target}")


def _bind(source: str, target: str, *, read_only: bool, flags: int = 0) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only or flags:  # a bind mount takes its flags only when remounted
        ro = MS_RDONLY if read_only else 0
        _mount(None, target, None, MS_REMOUNT | MS_BIND | ro | flags)


def host_path(root: Path, path: str) -> Path:
    """Where the container's ``path`` is on the host: symlinks resolved inside ``root``.

    (``/var/run`` is a symlink to the absolute ``/run``: followed on the host it would leave the
    image.)
    """
    parts = [p for p in posixpath.normpath(path).split("/") if p]
    resolved: list[str] = []
    for _ in range(40):  # symlink hops, as the kernel's limit
        while parts:
            part = parts.pop(0)
            if part == "..":
                resolved = resolved[:-1]
                continue
            candidate = root.joinpath(*resolved, part)
            if candidate.is_symlink():
                target = os.readlink(candidate)
                base = [] if target.startswith("/") else resolved
                parts = [p for p in target.split("/") if p] + parts
                resolved = list(base)
                break
            resolved.append(part)
        else:
            return root.joinpath(*resolved)
    raise OSError(f"too many symlinks under {root} in {path}")


def _find(command: str, env: dict[str, str]) -> str:
    if "/" in command:
        return command
    for directory in env.get("PATH", "").split(":"):
        candidate = posixpath.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{command} is not on the image's PATH {env.get('PATH')!r}")


def run(spec: dict[str, Any]) -> None:
    """Set up the namespace and mounts of ``spec``, then exec its command (never returns)."""
    root = Path(spec["root"])
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount reaches the host
    _bind(str(root), str(root), read_only=bool(spec["readOnlyRoot"]), flags=MS_NOSUID | MS_NODEV)
    _mount("proc", str(host_path(root, "/proc")), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = host_path(root, "/dev")
    _mount("tmpfs", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC)
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            (dev / name).touch()
            _bind(f"/dev/{name}", str(dev / name), read_only=False)
    for m in spec["mounts"]:
        target = host_path(root, m["target"])
        if not target.is_dir():
            raise FileNotFoundError(f"mount point {m['target']} is not a directory in the image")
        _bind(m["source"], str(target), read_only=bool(m["readOnly"]), flags=MS_NOSUID | MS_NODEV)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())

    os.chroot(root)
    os.chdir(spec["workdir"] or "/")
    for cap in range(last_cap + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])  # from root to another uid: permitted and effective sets are cleared
    env: dict[str, str] = spec["env"]
    argv: list[str] = spec["argv"]
    os.execve(_find(argv[0], env), argv, env)  # noqa: S606 - replacing this process is the point


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
