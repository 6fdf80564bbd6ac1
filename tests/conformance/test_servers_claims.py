"""``Context.servers`` (issue 23): tests that need several servers take distinct ones of
the peer's process, even when they ask at once, and skip with a reason naming the
config's ``servers:`` when there are not enough."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest

from stubserver.conformance.context import Context
from stubserver.conformance.runner import Skipped
from stubserver.testing import Homeserver, Peer


class NamedPeer:
    """A peer that has a name and nothing else (the claims read no more)."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name


def _context(count: int) -> Context:
    others = [cast(Peer, NamedPeer(f"m{i}.test")) for i in range(1, count + 1)]
    return Context(
        cast(Peer, NamedPeer("direct.test")),
        cast(Homeserver, object()),
        [],
        "hs.test",
        Path("unused.yaml"),
        others=others,
    )


def test_tests_asking_at_once_get_distinct_servers() -> None:
    """Six tests taking two servers each at once, of twelve: every server is taken once."""
    ctx = _context(12)
    with ThreadPoolExecutor(max_workers=6) as pool:
        taken = list(pool.map(lambda i: ctx.servers(2, f"test {i}"), range(6)))
    names = [p.server_name for group in taken for p in group]
    assert sorted(names) == sorted(f"m{i}.test" for i in range(1, 13))
    assert all(len(group) == 2 for group in taken)


def test_too_few_servers_skip_with_what_to_configure() -> None:
    """With three servers, one of them taken, a test needing three skips, saying how many
    the process serves, how many are taken and where to add more; it takes none."""
    ctx = _context(3)
    ctx.servers(1, "first")
    with pytest.raises(Skipped) as caught:
        ctx.servers(3, "the fan-out test")
    reason = str(caught.value)
    assert "the fan-out test needs 3 more server name(s)" in reason
    assert "`servers:`" in reason
    assert "serves 3 besides direct.test, 1 taken" in reason
    assert len(ctx.servers(2, "the rest")) == 2


def test_a_peer_of_one_server_skips_every_test_that_needs_another() -> None:
    """No other servers: a test needing one skips."""
    with pytest.raises(Skipped, match=r"serves 0 besides direct\.test"):
        _context(0).servers(1, "a join through a second server")
