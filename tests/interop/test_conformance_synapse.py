"""``stubserver conformance`` against the interop environment's real Synapse 1.163.2
(issue 14): run as a user would, inside the namespace, driving the running ``direct.test``
stub through its control API."""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stubserver.conformance.runner import RESULTS
from tests.interop.harness import InteropEnvironment

pytestmark = pytest.mark.interop

#: Deadline of the whole suite run, in seconds (it takes well under a minute).
SUITE_TIMEOUT_S = 600


def test_every_conformance_test_passes_against_synapse(
    interop_env: InteropEnvironment, tmp_path: Path
) -> None:
    """Every test of the suite passes against Synapse for v10, v11 and v12 (exit 0) but
    those the shipped expected-failures file names, which fail as expected; the JSON has
    the documented shape, and the JUnit file lists every test."""
    env = interop_env
    junit = tmp_path / "conformance.xml"
    started = time.monotonic()
    done = env.ns.run(
        [
            sys.executable,
            "-m",
            "stubserver",
            "conformance",
            "--homeserver-name",
            env.synapse.server_name,
            "--homeserver-url",
            env.synapse.files.spec.client_url,
            "-c",
            env.stubs["direct.test"].files.config_path,
            "--registration-shared-secret",
            env.synapse.files.registration_shared_secret,
            "--expect-fail",
            "synapse",
            "--json",
            "--junit",
            junit,
            "--ca-file",
            env.ca.cert_path,
        ],
        timeout=SUITE_TIMEOUT_S,
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
    assert known == ["keys.notary_minimum_valid_until_ts_optional"]
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
