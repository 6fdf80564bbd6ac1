"""``stubserver generate --count N --delegation METHOD --zone-file FILE`` (issue 23): which
method each server gets, the zone that makes it so, and the config that serves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stubserver.cli.generate_delegation import (
    DIRECT,
    SRV,
    WELL_KNOWN,
    method_of,
    placement,
    with_first_label_suffix,
    zone_records,
)
from stubserver.config import ConfigError, load_config
from stubserver.devtools.dns_server import parse_zone
from tests.cli.test_generate import generate, sans


def test_mixed_takes_the_three_methods_in_turn_the_primary_first() -> None:
    """``mixed``: direct, well_known, srv, direct, ...; any other delegation is uniform."""
    assert [method_of("mixed", k) for k in range(7)] == [
        DIRECT,
        WELL_KNOWN,
        SRV,
        DIRECT,
        WELL_KNOWN,
        SRV,
        DIRECT,
    ]
    assert {method_of(SRV, k) for k in range(5)} == {SRV}


@pytest.mark.parametrize(
    ("name", "suffix", "expected"),
    [
        ("s2.test", "-fed", "s2-fed.test"),
        ("s{i}.test", "-srv", "s{i}-srv.test"),
        ("a.b.example.org", "-fed", "a-fed.b.example.org"),
        ("localhost", "-fed", "localhost-fed"),
    ],
)
def test_a_delegated_host_suffixes_the_first_label(name: str, suffix: str, expected: str) -> None:
    """Delegated hosts and SRV targets differ from the name in its first label only (so a
    template keeps its ``{i}``)."""
    assert with_first_label_suffix(name, suffix) == expected


def test_a_well_known_server_publishes_its_delegated_name_and_its_certificate_names_both() -> None:
    """``well_known``: ``m.server`` is ``<label>-fed.<rest>:<port>`` unless given, and the
    certificate names the server name (the .well-known fetch) and the delegated host (the
    federation connection); srv and direct servers' certificates name the server only."""
    wk = placement("s2.test", WELL_KNOWN, port=8448)
    assert (wk.wellknown, wk.tls_names) == ("s2-fed.test:8448", ("s2.test", "s2-fed.test"))
    given = placement("s2.test", WELL_KNOWN, port=8448, wellknown="fed.example:9000")
    assert (given.wellknown, given.tls_names) == ("fed.example:9000", ("s2.test", "fed.example"))
    srv = placement("s3.test", SRV, port=8448)
    assert (srv.wellknown, srv.tls_names) == (None, ("s3.test",))
    assert placement("s1.test", DIRECT, port=8448, requested_tls_names=["x.test"]).tls_names == (
        "x.test",
    )


def test_the_zone_gives_each_method_its_records() -> None:
    """direct: an A record for the name; well_known: A records for the name and for the
    delegated host; srv: a ``_matrix-fed._tcp`` SRV record to ``<label>-srv`` on the
    federation port and an A record for that target, none for the name itself. The
    DNS server reads the zone as it is."""
    placements = [
        placement("s1.test", DIRECT, port=9448),
        placement("s2.test", WELL_KNOWN, port=9448),
        placement("s3.test", SRV, port=9448),
    ]
    records = zone_records(placements, "127.0.0.9", 9448)
    parsed = parse_zone({"records": records})
    assert [(r.name, r.type, r.value or f"{r.target}:{r.port}") for r in parsed] == [
        ("s1.test", "A", "127.0.0.9"),
        ("s2.test", "A", "127.0.0.9"),
        ("s2-fed.test", "A", "127.0.0.9"),
        ("_matrix-fed._tcp.s3.test", "SRV", "s3-srv.test:9448"),
        ("s3-srv.test", "A", "127.0.0.9"),
    ]
    assert {r["type"] for r in zone_records(placements[:1], "::1", 9448)} == {"AAAA"}


def test_mixed_writes_a_config_that_serves_each_server_by_its_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--count 6 --delegation mixed --zone-file``: one entry per server (a generator
    cannot alternate), ``serve_server_wellknown`` on the well-known ones, a well_known
    listener on ``--well-known-port`` beside the federation one, the private ports named
    so that the servers find each other, certificates for the right names, and the zone."""
    zone_path = tmp_path / "zone.json"
    assert (
        generate(
            tmp_path,
            *("--count", "6", "--server-name", "s{i}.test", "--bind", "127.0.0.9"),
            *("--port", "9448", "--well-known-port", "9443", "--delegation", "mixed"),
            *("--zone-file", str(zone_path)),
        )
        == 0
    )
    config = load_config(Path(capsys.readouterr().out.strip()))
    servers = config.every_server
    assert [(s.server_name, s.serve_server_wellknown) for s in servers] == [
        ("s1.test", None),
        ("s2.test", "s2-fed.test:9448"),
        ("s3.test", None),
        ("s4.test", None),
        ("s5.test", "s5-fed.test:9448"),
        ("s6.test", None),
    ]
    served = {(lc.port, tuple(sorted(lc.resources))) for lc in config.listeners}
    assert {(9448, ("federation",)), (9443, ("well_known",))} <= served
    assert (config.federation.well_known_port, config.federation.default_port) == (9443, 9448)
    certificates = {s.server_name: s.tls_certificate_path for s in servers}
    assert sans(certificates["s2.test"]) == ["s2.test", "s2-fed.test"]  # type: ignore[arg-type]
    assert sans(certificates["s3.test"]) == ["s3.test"]  # type: ignore[arg-type]
    names = {r.name for r in parse_zone(json.loads(zone_path.read_text()))}
    assert "_matrix-fed._tcp.s6.test" in names
    assert "s6.test" not in names


def test_a_uniform_delegation_keeps_the_generator_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--delegation well_known``: every server delegates (the generator entry carries
    ``s{i}-fed.test:PORT``), and the well-known document shares the federation listener
    when ``--well-known-port`` is its port."""
    assert (
        generate(
            tmp_path,
            *("--count", "3", "--server-name", "s{i}.test", "--port", "9448"),
            *("--well-known-port", "9448", "--delegation", "well_known"),
        )
        == 0
    )
    config = load_config(Path(capsys.readouterr().out.strip()))
    assert [s.serve_server_wellknown for s in config.every_server] == [
        "s1-fed.test:9448",
        "s2-fed.test:9448",
        "s3-fed.test:9448",
    ]
    assert config.listeners[0].resources == frozenset({"federation", "well_known"})


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--server-name", "s.test", "--delegation", "srv"], "--delegation"),
        (["--server-name", "s.test", "--zone-file", "z.json"], "--zone-file"),
        (
            ["--server-name", "s{i}.test:8448", "--count", "2", "--delegation", "srv"],
            "--server-name",
        ),
        (["--server-name", "127.0.0.{i}", "--count", "2", "--zone-file", "z"], "--server-name"),
        (
            [
                *("--server-name", "s{i}.test", "--count", "2", "--delegation", "srv"),
                *("--serve-wellknown", "f{i}.test"),
            ],
            "--serve-wellknown",
        ),
        (
            ["--server-name", "s{i}.test", "--count", "2", "--zone-file", "z", "--bind", "::"],
            "--bind",
        ),
        (
            ["--server-name", "s{i}.test", "--count", "2", "--zone-file", "z", "--port", "0"],
            "--port",
        ),
        (
            [
                *("--server-name", "s{i}.test", "--count", "2", "--delegation", "mixed"),
                *("--well-known-port", "0"),
            ],
            "--well-known-port",
        ),
    ],
)
def test_bad_delegation_arguments(tmp_path: Path, args: list[str], key: str) -> None:
    """A delegation or zone without ``--count``, for names found without DNS (a port, an
    IP address), ``--serve-wellknown`` with a method that publishes none, a zone for the
    wildcard address or for port 0, a well-known port out of range: ConfigError naming
    the flag, nothing written."""
    with pytest.raises(ConfigError) as info:
        generate(tmp_path, *args)
    assert info.value.key == key
    assert not (tmp_path / "keys").exists()
