"""What Dendrite's build cache costs on first use (issue 21): time and size, measured.

Runs tests/interop/dendrite.py's own ``ensure_dendrite`` (the ``go install`` the interop
tests run) into a temporary cache folder, with a temporary Go module cache (GOMODCACHE)
and build cache (GOCACHE), so that neither the shared ``tests/.cache`` nor the user's Go
caches are touched or used:

1. cold: empty module cache, empty build cache, no binaries (a fresh machine);
2. warm: the same module and build caches, the binaries removed (a fresh clone, or a new
   cache key, on a machine that keeps its Go caches);
3. cached: the binaries there (every later test run): ``ensure_dendrite`` returns at once;
4. modules only: the module cache kept, the build cache and the binaries removed (what
   the download costs is cold minus this).

Prints one JSON object (seconds, and sizes in MB of the module cache, the build cache and
the binaries). Needs Go and the Go module proxy; not part of CI.

    .venv/bin/python bench/dendrite_cache.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def size_mb(path: Path) -> float:
    """Disk usage of ``path`` (``du -s``, blocks actually used), in MB (10^6 bytes)."""
    if not path.exists():
        return 0.0
    done = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True
    )
    return round(int(done.stdout.split()[0]) / 1e6, 1)


def timed_install(cache: Path) -> tuple[float, Path]:
    """Seconds ``ensure_dendrite`` takes into ``cache``, and the binaries' folder."""
    from tests.interop.dendrite import ensure_dendrite  # noqa: PLC0415

    started = time.monotonic()
    bin_dir = ensure_dendrite(cache=cache)
    return round(time.monotonic() - started, 1), bin_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = args.keep or Path(tempfile.mkdtemp(prefix="stubbench-dendrite-cache-"))
    mod, build, cache = work / "gomodcache", work / "gocache", work / "cache"
    # The Go caches of this process and its go commands (install_once adds its env on top).
    os.environ["GOMODCACHE"] = str(mod)
    os.environ["GOCACHE"] = str(build)
    out: dict[str, object] = {"loadavg_1min_before": os.getloadavg()[0]}
    try:
        out["cold_s"], bin_dir = timed_install(cache)
        out["modules_mb"] = size_mb(mod)
        out["build_cache_mb"] = size_mb(build)
        out["binaries_mb"] = size_mb(bin_dir)
        out["binaries"] = sorted(p.name for p in bin_dir.iterdir())
        shutil.rmtree(bin_dir.parent)
        out["warm_s"], bin_dir = timed_install(cache)
        out["cached_s"], _ = timed_install(cache)
        out["build_cache_mb_after_warm"] = size_mb(build)
        shutil.rmtree(bin_dir.parent)
        shutil.rmtree(build)
        out["modules_only_s"], _ = timed_install(cache)
        out["go"] = subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, check=False
        ).stdout.strip()
        out["loadavg_1min_after"] = os.getloadavg()[0]
    finally:
        if args.keep is None:
            # The module cache is read-only by design; make it writable to remove it.
            subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
