"""Interleaved A/B of ``stubserver run``: start-up (spawn to the ready line) and idle RSS,
for two source trees, each with its own ``.venv`` (issue 11's before/after figure).

    .venv/bin/python bench/ab_startup.py /work/wt-old . --rounds 30

Both trees run the *same* config: one made by the new tree's ``generate`` (federation
listener on loopback, port 0), with the control listener and the room keys
(``control_token``, ``default_room_version``, ``invites``) removed unless
``--keep-control`` (a tree from before issue 13 does not know them). Rounds alternate the
order (ABBA...) so drift in machine load falls on both sides alike. Idle RSS is VmRSS
``--idle-s`` seconds after the ready line. Prints medians, p90 and the difference of
medians, and a JSON line with every sample. Not a test; nothing in CI runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def make_config(tree: Path, directory: Path, keep_control: bool) -> Path:
    import yaml  # noqa: PLC0415

    python = tree / ".venv" / "bin" / "python"
    out = subprocess.run(
        [
            str(python),
            "-m",
            "stubserver",
            "generate",
            "--server-name",
            "ab.test",
            "--dir",
            str(directory),
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=directory.parent,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    config = yaml.safe_load(path.read_text())
    if not keep_control:
        config["listeners"] = [
            entry for entry in config["listeners"] if "control" not in entry.get("resources", [])
        ]
        for key in ("control_token", "default_room_version", "invites"):
            config.pop(key, None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one(tree: Path, config: Path, idle_s: float) -> tuple[float, float]:
    python = tree / ".venv" / "bin" / "python"
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [str(python), "-m", "stubserver", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=config.parent,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    took = time.perf_counter() - t0
    if not line:
        raise RuntimeError(f"{tree}: no ready line")
    time.sleep(idle_s)
    rss = (
        next(
            int(x.split()[1])
            for x in Path(f"/proc/{p.pid}/status").read_text().splitlines()
            if x.startswith("VmRSS:")
        )
        / 1024
    )
    p.terminate()
    p.wait()
    p.stdout.close()
    return took, rss


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, round(0.9 * len(ordered)) - 1)],
        "min": ordered[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument("--keep-control", action="store_true")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    samples: dict[str, dict[str, list[float]]] = {n: {"start_s": [], "rss_mb": []} for n in trees}
    with tempfile.TemporaryDirectory(prefix="stubbench-ab-") as tmp:
        config = make_config(trees["new"], Path(tmp) / "cfg", args.keep_control)
        for tree in trees.values():  # one unmeasured warm-up each (bytecode, page cache)
            one(tree, config, 0.1)
        for i in range(args.rounds):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for name in order:
                took, rss = one(trees[name], config, args.idle_s)
                samples[name]["start_s"].append(took)
                samples[name]["rss_mb"].append(rss)
    result: dict[str, Any] = {
        "rounds": args.rounds,
        "idle_s": args.idle_s,
        "keep_control": args.keep_control,
        "loadavg_1min_after": os.getloadavg()[0],
        "samples": samples,
    }
    for name in trees:
        s, r = stats(samples[name]["start_s"]), stats(samples[name]["rss_mb"])
        print(
            f"{name}: start median {s['median'] * 1000:.0f} ms p90 {s['p90'] * 1000:.0f} ms"
            f" min {s['min'] * 1000:.0f} ms; idle RSS median {r['median']:.1f} MB"
        )
        result[name] = {"start": s, "rss": r}
    d_start = (result["new"]["start"]["median"] - result["old"]["start"]["median"]) * 1000
    d_min = (result["new"]["start"]["min"] - result["old"]["start"]["min"]) * 1000
    d_rss = result["new"]["rss"]["median"] - result["old"]["rss"]["median"]
    print(
        f"new - old: start-up {d_start:+.0f} ms (medians), {d_min:+.0f} ms (minima);"
        f" idle RSS {d_rss:+.1f} MB"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
