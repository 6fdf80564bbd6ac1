"""run's outbound stack: CA files checked at start-up, everything else built on first use."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from stubserver.app.federation import LazyKeyFetcher, build_federation_extensions
from stubserver.client.backoff import DestinationBackoff
from stubserver.config import ConfigError, load_config
from stubserver.tls.certificates import make_ca
from tests.support import FakeReactor, write_stub


def test_unreadable_ca_file_is_a_start_up_config_error(tmp_path: Path) -> None:
    """A CA file that is not PEM stops start-up with the key named, though nothing is dialled."""
    bad = tmp_path / "bad-ca.pem"
    bad.write_text("not a certificate\n")
    config = load_config(
        write_stub(
            tmp_path, "a.test", make_ca(), extra_config={"federation_custom_ca_list": [str(bad)]}
        )
    )
    reactor = FakeReactor()
    with pytest.raises(ConfigError) as caught:
        build_federation_extensions(config, reactor)
    assert caught.value.key == "federation_custom_ca_list[0]"


def test_outbound_stack_is_built_on_the_first_fetch(tmp_path: Path) -> None:
    """No agent exists until a key is first fetched; the fetch then goes through it.

    The default blocklist refuses loopback, which proves the fetch reached the real agent.
    """
    config = load_config(write_stub(tmp_path, "a.test", make_ca()))
    reactor = FakeReactor()
    fetcher = LazyKeyFetcher(reactor, config, DestinationBackoff(reactor, random.Random(0)))
    assert not fetcher.built
    d = fetcher.fetch_cached_or_fresh("127.0.0.1:8448")
    assert fetcher.built
    failure = d.result
    assert "127.0.0.1 is in ip_range_blocklist" in str(failure.value)
    d.addErrback(lambda _: None)
    assert reactor.tcpClients == []
