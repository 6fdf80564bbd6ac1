"""``stubserver conformance`` against the interop environment's real Synapse 1.163.2
(issue 14): run as a user would, inside the namespace, driving the running ``direct.test``
stub through its control API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stubserver.conformance.runner import RESULTS
from tests.interop.harness import (
    InteropEnvironment,
    StubSpec,
    run_conformance,
    start_stub,
    write_stub_config,
)

pytestmark = pytest.mark.interop

#: The preflight's whole run (user registration, resolution, three requests of 10 s at
#: most), in seconds: far below one test's 30 s wait, let alone the suite's.
PREFLIGHT_DEADLINE_S = 40


def _conformance(
    env: InteropEnvironment, peer_config: Path, *options: str | Path
) -> subprocess.CompletedProcess[str]:
    """``stubserver conformance`` against the environment's Synapse, driving the peer of
    ``peer_config``."""
    return run_conformance(env.ns, env.synapse, env.ca, peer_config, *options)


def test_every_conformance_test_passes_against_synapse(
    interop_env: InteropEnvironment, tmp_path: Path
) -> None:
    """Every test of the suite passes against Synapse for v10, v11 and v12 (exit 0) but
    those the shipped expected-failures file names, which fail as expected; the JSON has
    the documented shape, and the JUnit file lists every test."""
    env = interop_env
    junit = tmp_path / "conformance.xml"
    started = time.monotonic()
    done = _conformance(
        env,
        env.stubs["direct.test"].files.config_path,
        "--expect-fail",
        "synapse",
        "--json",
        "--junit",
        junit,
    )
    seconds = time.monotonic() - started
    report = json.loads(done.stdout) if done.stdout.strip() else None
    failures = [
        t
        for t in (report or {}).get("tests", [])
        if t["result"] not in ("passed", "expected_failure")
    ]
    assert done.returncode == 0 and not failures, (
        f"exit {done.returncode}; not passed:\n"
        + "\n".join(f"{t['id']}: {t['result']}: {t['reason']}" for t in failures)
        + f"\nstderr: {done.stderr[-3000:]}"
    )
    assert report is not None
    assert set(report) == {"homeserver", "tests", *RESULTS}
    assert report["homeserver"] == env.synapse.server_name
    assert {t["room_version"] for t in report["tests"]} == {None, "10", "11", "12"}
    known = [t["id"] for t in report["tests"] if t["result"] == "expected_failure"]
    assert known == [
        "keys.notary_minimum_valid_until_ts_optional",
        *(f"edus.typing_of_a_non_member_ignored/v{v}" for v in ("10", "11", "12")),
    ]
    assert report["passed"] + len(known) == len(report["tests"])
    cases = ET.parse(junit).getroot().iter("testcase")
    assert sorted(c.get("name") or "" for c in cases) == sorted(t["id"] for t in report["tests"])
    print(
        f"\n[conformance] {len(report['tests'])} tests in {seconds:.1f} s "
        f"({sum(t['seconds'] for t in report['tests']):.1f} test-seconds)",
        *[f"  {t['id']}: {t['reason']}" for t in report["tests"] if t["reason"]],
        sep="\n",
        file=sys.__stderr__,
    )


def test_a_peer_synapse_cannot_reach_stops_the_run_in_seconds(
    interop_env: InteropEnvironment, tmp_path: Path
) -> None:
    """A peer whose name Synapse cannot resolve (no DNS record): the preflight finds that
    Synapse cannot fetch its keys and stops the run, exit 2, within seconds rather than
    after every test's time-out, with stubserver check's way-back hint; no test ran."""
    env = interop_env
    spec = StubSpec(server_name="lost.test", federation=("127.0.0.42", 8448, ("lost.test",)))
    stub = start_stub(env.ns, write_stub_config(tmp_path / "lost", spec, env.ca))
    try:
        started = time.monotonic()
        done = _conformance(env, stub.files.config_path, "--json")
        seconds = time.monotonic() - started
    finally:
        stub.process.stop()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stdout == ""
    assert "it reaches the peer (our keys through its notary)" in done.stderr, done.stderr
    assert "synapse.test could not fetch the keys of lost.test" in done.stderr, done.stderr
    assert "stubserver check synapse.test" in done.stderr
    assert seconds < PREFLIGHT_DEADLINE_S, f"{seconds:.1f} s"
    print(f"\n[conformance] preflight refused lost.test in {seconds:.1f} s", file=sys.__stderr__)
