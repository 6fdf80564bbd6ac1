"""SharedFetches: one fetch per key, shared by its callers."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from stubserver.client.shared_fetch import SharedFetches


class SharedFetchesTests(SynchronousTestCase):
    def test_callers_share_one_fetch_and_a_cancel_drops_only_its_caller(self) -> None:
        """Two callers start one fetch; cancelling one leaves the other its result."""
        shared: SharedFetches[str] = SharedFetches()
        started: list[Deferred[str]] = []

        def start() -> Deferred[str]:
            d: Deferred[str] = Deferred()
            started.append(d)
            return d

        first = shared.join("a", start)
        second = shared.join("a", start)
        assert len(started) == 1
        first.cancel()
        self.failureResultOf(first, CancelledError)  # type: ignore[no-untyped-call]
        started[0].callback("keys")
        assert self.successResultOf(second) == "keys"

    def test_a_finished_key_starts_a_new_fetch(self) -> None:
        """After a fetch delivered, the next caller for the key starts another."""
        shared: SharedFetches[int] = SharedFetches()
        calls: list[int] = []

        def start() -> Deferred[int]:
            calls.append(1)
            d: Deferred[int] = Deferred()
            d.callback(len(calls))
            return d

        assert self.successResultOf(shared.join("a", start)) == 1
        assert self.successResultOf(shared.join("a", start)) == 2
