"""``stubserver conformance`` run as a user would against a real homeserver of the interop
environments (Synapse, Dendrite), and the checks its outcome must pass: shared by
tests/interop/test_conformance_synapse.py and test_conformance_dendrite.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Collection
from pathlib import Path
from typing import Any

from stubserver.conformance.runner import RESULTS
from tests.interop.federation_cases import PeerEnvironment
from tests.interop.harness import StubSpec, run_conformance, start_stub, write_stub_config

#: The preflight's whole run (user registration, resolution, three requests of 10 s at
#: most), in seconds: far below one test's 30 s wait, let alone the suite's.
PREFLIGHT_DEADLINE_S = 40


def _conformance(
    env: PeerEnvironment, peer_config: Path, *options: str | Path
) -> subprocess.CompletedProcess[str]:
    """``stubserver conformance`` against ``env``'s homeserver, driving the peer of
    ``peer_config``."""
    hs = env.homeserver
    return run_conformance(
        env.ns, hs.spec, hs.registration_shared_secret, env.ca, peer_config, *options
    )


def skipped_over_a_known_deviation(test: dict[str, Any], known: Collection[str]) -> bool:
    """True when ``test`` (an entry of ``--json``'s ``tests``) was skipped without a
    verdict because its positive baseline is one of the ``known`` deviations and failed as
    expected (e.g. the knock refusals where the homeserver has no knocking at all): a
    negative test has nothing to refuse then (pure)."""
    if test["result"] != "skipped":
        return False
    reason = str(test["reason"] or "")
    return any(
        reason.startswith(f"no verdict: its baseline {baseline} did not pass (expected_failure:")
        for baseline in known
    )


def run_whole_suite(
    env: PeerEnvironment,
    expect_fail: str,
    tmp_path: Path,
    *,
    versions: Collection[str],
    known: Collection[str],
    allowed_skips: Collection[str] = (),
) -> dict[str, Any]:
    """Run every test against ``env``'s homeserver, driving its running ``direct.test``
    stub, with ``--expect-fail expect_fail --json --junit``; assert exit 0 with no result
    but passed, expected_failure and skips over a known deviation
    (:func:`skipped_over_a_known_deviation`) or among ``allowed_skips`` (each of which must
    skip: a way the spec leaves open), the JSON's documented shape, the room versions
    ``versions`` (and None for those without one), exactly ``known`` failing as expected,
    and a JUnit file listing every test. Print the timing past pytest's capture; the
    report."""
    hs = env.homeserver
    junit = tmp_path / "conformance.xml"
    started = time.monotonic()
    done = _conformance(
        env,
        env.stubs["direct.test"].files.config_path,
        "--expect-fail",
        expect_fail,
        "--json",
        "--junit",
        junit,
    )
    seconds = time.monotonic() - started
    report: dict[str, Any] | None = json.loads(done.stdout) if done.stdout.strip() else None
    failures = [
        t
        for t in (report or {}).get("tests", [])
        if t["result"] not in ("passed", "expected_failure")
        and not skipped_over_a_known_deviation(t, known)
        and not (t["result"] == "skipped" and t["id"] in allowed_skips)
    ]
    assert done.returncode == 0 and not failures, (
        f"exit {done.returncode}; not passed:\n"
        + "\n".join(f"{t['id']}: {t['result']}: {t['reason']}" for t in failures)
        + f"\nstderr: {done.stderr[-3000:]}"
    )
    assert report is not None
    assert set(report) == {"homeserver", "tests", *RESULTS}
    assert report["homeserver"] == hs.server_name
    assert {t["room_version"] for t in report["tests"]} == {None, *versions}
    expected = [t["id"] for t in report["tests"] if t["result"] == "expected_failure"]
    assert sorted(expected) == sorted(known)
    skipped = [t["id"] for t in report["tests"] if t["result"] == "skipped"]
    allowed = [i for i in skipped if i in allowed_skips]
    assert sorted(allowed) == sorted(allowed_skips), f"skipped: {skipped}"
    assert report["passed"] + len(expected) + len(skipped) == len(report["tests"])
    cases = ET.parse(junit).getroot().iter("testcase")
    assert sorted(c.get("name") or "" for c in cases) == sorted(t["id"] for t in report["tests"])
    print(
        f"\n[conformance] {hs.product}: {len(report['tests'])} tests in {seconds:.1f} s "
        f"({sum(t['seconds'] for t in report['tests']):.1f} test-seconds)",
        *[f"  {t['id']}: {t['reason']}" for t in report["tests"] if t["reason"]],
        sep="\n",
        file=sys.__stderr__,
    )
    return report


def check_preflight_stops_a_lost_peer(env: PeerEnvironment, tmp_path: Path) -> None:
    """A peer whose name ``env``'s homeserver cannot resolve (no DNS record): the
    preflight finds that the homeserver cannot fetch its keys through its notary and stops
    the run, exit 2, within seconds rather than after every test's time-out, with
    stubserver check's way-back hint; no test ran."""
    name = env.homeserver.server_name
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
    assert f"{name} could not fetch the keys of lost.test" in done.stderr, done.stderr
    assert f"stubserver check {name}" in done.stderr
    assert seconds < PREFLIGHT_DEADLINE_S, f"{seconds:.1f} s"
    print(
        f"\n[conformance] {env.homeserver.product}: preflight refused lost.test in {seconds:.1f} s",
        file=sys.__stderr__,
    )
