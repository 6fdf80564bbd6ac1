"""The pytest plugin of ``stubserver.testing`` (entry point ``pytest11``: loaded by pytest
whenever stubserver is installed).

Fixtures:

- ``stubserver_peer``: a factory, ``peer = stubserver_peer(server_name=..., strict=...)``,
  taking :meth:`Peer.start`'s keywords; the ``--peer-*`` options are its defaults. Every
  peer it started is stopped at teardown (a strict peer's violations fail the test
  there). When a test fails, each peer's failure report (the requests it received and its
  stderr) is added to the test's report.
- ``homeserver``: the :class:`Homeserver` under test, from ``--homeserver-url`` and
  ``--homeserver-name`` (skipped, saying so, when not given).
- ``homeserver_users``: its users: one per ``--homeserver-token``, else two registered
  with ``--registration-shared-secret`` or ``--registration-token``;
  ``homeserver_user``: the first of them.

Peers made without ``--peer-ca-cert``/``--peer-ca-key`` share a CA made once per session
(so they trust each other); its certificate is the ``stubserver_ca_cert`` fixture.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stubserver.testing._files import free_port
from stubserver.testing._homeserver import Homeserver, HomeserverUser
from stubserver.testing._peer import Peer, PeerFactory

#: How many users ``homeserver_users`` registers when it registers them.
REGISTERED_USERS = 2
_PEERS_KEY = pytest.StashKey[list[Peer]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--homeserver-*``, ``--registration-*`` and ``--peer-*`` options."""
    group = parser.getgroup("stubserver", "stubserver federation tests")
    group.addoption(
        "--homeserver-url",
        help="client-server API base URL of the homeserver "
        "under test (https://..., or http:// to loopback)",
    )
    group.addoption("--homeserver-name", help="its server name (default: from its users' IDs)")
    group.addoption(
        "--homeserver-token",
        action="append",
        default=[],
        help="access token of an existing user (repeatable)",
    )
    group.addoption(
        "--homeserver-ca-file",
        help="CA file to verify the homeserver's "
        "client-server API certificate (default: the system store)",
    )
    group.addoption(
        "--registration-shared-secret",
        help="Synapse's registration_shared_secret: register users with it",
    )
    group.addoption("--registration-token", help="register users with this registration token")
    group.addoption(
        "--peer-dns-server",
        action="append",
        default=[],
        help="DNS server HOST:PORT the peers resolve with (repeatable)",
    )
    group.addoption("--peer-ca-cert", help="CA certificate issuing the peers' certificates")
    group.addoption("--peer-ca-key", help="its private key")
    group.addoption(
        "--peer-ca-file",
        action="append",
        default=[],
        help="extra CA the peers trust for outbound federation (repeatable), e.g. the homeserver's",
    )
    group.addoption("--peer-bind", default="127.0.0.1", help="address the peers listen on")
    group.addoption(
        "--peer-host",
        help="a host name that resolves to --peer-bind: peers are then named HOST:PORT instead"
        " of ADDRESS:PORT (Synapse refuses to federate with IP-literal loopback names)",
    )
    group.addoption(
        "--peer-allow-ip",
        action="append",
        default=[],
        help="CIDR the peers may dial despite the blocklist (repeatable)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add each peer's failure report to a failed test's report."""
    report = yield
    if report.failed and call.when == "call":
        for peer in item.stash.get(_PEERS_KEY, []):
            if peer.process.running:
                report.sections.append(
                    (f"stubserver peer {peer.server_name}", peer.failure_report())
                )
    return report


@pytest.fixture(scope="session")
def stubserver_ca(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The CA (certificate path, key path) issuing the peers' certificates."""
    cert, key = (
        request.config.getoption("--peer-ca-cert"),
        request.config.getoption("--peer-ca-key"),
    )
    if (cert is None) != (key is None):
        raise pytest.UsageError("--peer-ca-cert and --peer-ca-key go together")
    if cert is not None:
        return Path(cert), Path(key)
    from stubserver.tls.certificates import make_ca  # noqa: PLC0415

    directory = tmp_path_factory.mktemp("stubserver-ca")
    pair = make_ca("stubserver.testing session CA")
    (directory / "ca.crt").write_bytes(pair.cert_pem)
    (directory / "ca.key").write_bytes(pair.key_pem)
    (directory / "ca.key").chmod(0o600)
    return directory / "ca.crt", directory / "ca.key"


@pytest.fixture(scope="session")
def stubserver_ca_cert(stubserver_ca: tuple[Path, Path]) -> Path:
    """The peers' CA certificate (for the homeserver under test to trust)."""
    return stubserver_ca[0]


@pytest.fixture
def stubserver_peer(
    request: pytest.FixtureRequest, tmp_path: Path, stubserver_ca: tuple[Path, Path]
) -> Iterator[PeerFactory]:
    """A factory of peers, each stopped at teardown (strict peers checked then)."""
    options = request.config.getoption
    defaults: dict[str, Any] = {
        "bind": options("--peer-bind"),
        "ca": stubserver_ca,
        "dns_servers": list(options("--peer-dns-server")),
        "allow_ips": list(options("--peer-allow-ip")),
        "ca_files": list(options("--peer-ca-file")),
    }
    peers: list[Peer] = []
    request.node.stash[_PEERS_KEY] = peers

    host = options("--peer-host")

    def start(**kwargs: Any) -> Peer:
        directory = kwargs.pop("directory", tmp_path / f"peer{len(peers)}")
        if host and "server_name" not in kwargs:
            kwargs["server_name"] = f"{host}:{free_port(kwargs.get('bind', defaults['bind']))}"
        peer = Peer.start(directory, **{**defaults, **kwargs})
        peers.append(peer)
        return peer

    yield start
    failures: list[BaseException] = []
    for peer in reversed(peers):
        try:
            peer.close()
        except Exception as e:  # every peer is stopped; the first failure is raised
            failures.append(e)
    if failures:
        raise failures[0]


@pytest.fixture(scope="session")
def homeserver(request: pytest.FixtureRequest) -> Homeserver:
    """The homeserver under test (skipped without ``--homeserver-url``)."""
    url = request.config.getoption("--homeserver-url")
    if not url:
        pytest.skip("no homeserver under test: pass --homeserver-url (and --homeserver-name)")
    return Homeserver(
        url,
        server_name=request.config.getoption("--homeserver-name"),
        ca_file=request.config.getoption("--homeserver-ca-file"),
    )


@pytest.fixture(scope="session")
def homeserver_users(
    request: pytest.FixtureRequest, homeserver: Homeserver
) -> list[HomeserverUser]:
    """Users of the homeserver: from ``--homeserver-token``s, else registered."""
    options = request.config.getoption
    tokens: list[str] = options("--homeserver-token")
    if tokens:
        return [homeserver.user_with_token(token) for token in tokens]
    secret = options("--registration-shared-secret")
    if secret:
        return [homeserver.register_with_shared_secret(secret) for _ in range(REGISTERED_USERS)]
    token = options("--registration-token")
    if token:
        return [homeserver.register(registration_token=token) for _ in range(REGISTERED_USERS)]
    pytest.skip(
        "no homeserver credentials: pass --homeserver-token, "
        "--registration-shared-secret or --registration-token"
    )


@pytest.fixture(scope="session")
def homeserver_user(homeserver_users: list[HomeserverUser]) -> HomeserverUser:
    """The homeserver's first user."""
    return homeserver_users[0]
