"""Session fixtures for the real-homeserver interop tests (tests/interop/README.md).

Each environment (namespace, CA, DNS server, stubs and Synapse, or Dendrite) starts once
per session, on first use; without root, ``ip`` or (for Dendrite) Go the tests skip with
the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import pytest

from tests.interop import harness
from tests.interop.dendrite import DendriteEnvironment, dendrite_environment

E = TypeVar("E")


def _progress(message: str) -> None:
    # Past pytest's capture: the first run's Synapse install or Dendrite build takes a while.
    print(f"\n[interop] {message}", file=sys.__stderr__, flush=True)


def _started(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    start: Callable[..., AbstractContextManager[E]],
) -> Iterator[E]:
    reason = harness.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    directory: Path = tmp_path_factory.mktemp(name)
    try:
        with start(directory, log=_progress) as env:
            yield env
    except harness.EnvironmentUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(autouse=True)
def _known_deviation(request: pytest.FixtureRequest) -> None:
    """A test its class lists in ``expected_failures`` (a homeserver's known deviation from
    the spec) runs as a strict xfail: it must still fail, for the reason given. A name in
    the list that is no case of the class is an error, so that the list cannot go stale."""
    known: dict[str, str] = getattr(request.cls, "expected_failures", {})
    stale = [name for name in known if not hasattr(request.cls, name.split("[", 1)[0])]
    if stale:
        raise AssertionError(f"expected_failures of {request.cls} names no case: {stale}")
    reason = known.get(request.node.name)
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="session")
def interop_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.InteropEnvironment]:
    """The Synapse environment, started once for the session and torn down after it."""
    yield from _started(tmp_path_factory, "interop", harness.interop_environment)


@pytest.fixture(scope="session")
def dendrite_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DendriteEnvironment]:
    """The Dendrite environment, started once for the session and torn down after it."""
    yield from _started(tmp_path_factory, "dendrite", dendrite_environment)
