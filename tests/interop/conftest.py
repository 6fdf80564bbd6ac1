"""Session fixtures for the real-Synapse interop tests (tests/interop/README.md).

The environment (namespace, CA, DNS server, stubs, Synapse) starts once per session, on
first use; without root or ``ip`` the tests skip with the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.interop import harness


def _progress(message: str) -> None:
    # Past pytest's capture: the first run's Synapse install takes a while.
    print(f"\n[interop] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def interop_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.InteropEnvironment]:
    """The whole environment, started once for the session and torn down after it."""
    reason = harness.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("interop")
    try:
        with harness.interop_environment(directory, log=_progress) as env:
            yield env
    except harness.EnvironmentUnavailable as e:
        pytest.skip(str(e))
