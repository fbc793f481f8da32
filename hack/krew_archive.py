"""Build the krew archive of ``kubectl agenttask`` and print its path and sha256.

The archive (``dist/kubectl-agenttask-v<version>.tar.gz``) holds the launcher
``plugins/krew/kubectl-agenttask`` and is byte-for-byte reproducible (fixed modes, owners and
times, gzip without a timestamp), so the sha256 in ``plugins/krew/agenttask.yaml`` can be
checked against a fresh build (tests/test_krew.py) and an archive rebuilt anywhere matches it.
``--check`` fails when the manifest's version or sha256 disagree with the build.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "plugins" / "krew" / "kubectl-agenttask"
MANIFEST = REPO / "plugins" / "krew" / "agenttask.yaml"


def version() -> str:
    """The package's version, as krew wants it (``v0.1.0``)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return f"v{project['version']}"


def archive_bytes() -> bytes:
    """The archive, the same bytes on every machine."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = LAUNCHER.read_bytes()
        info = tarfile.TarInfo("kubectl-agenttask")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def build(dest: Path) -> tuple[Path, str]:
    """Write the archive under ``dest``; its path and sha256."""
    data = archive_bytes()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"kubectl-agenttask-{version()}.tar.gz"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Build; with ``--check``, compare with the manifest."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, default=REPO / "dist")
    p.add_argument("--check", action="store_true", help="fail if the manifest disagrees")
    args = p.parse_args(argv)
    path, sha = build(args.dest)
    print(f"{path} sha256:{sha}")
    if args.check:
        spec = yaml.safe_load(MANIFEST.read_text())["spec"]
        wrong = [pl["sha256"] for pl in spec["platforms"] if pl["sha256"] != sha]
        if spec["version"] != version() or wrong:
            print(
                f"{MANIFEST}: version {spec['version']} / sha256 {wrong} do not match",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
