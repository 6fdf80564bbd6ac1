"""``Peer.start_many``'s files, without a process: the members it names and the one
config serving them all (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from stubserver.config import load_config
from stubserver.testing._group import GroupOptions, group_members, write_group_files


def test_a_template_names_members_one_to_count_on_one_port() -> None:
    """``{i}`` runs from 1; a port in the template is the shared listener's."""
    members = group_members(3, "s{i}.test:8500", "127.0.0.1", None)
    assert [(m.server_name, m.port, m.own_listener) for m in members] == [
        ("s1.test:8500", 8500, False),
        ("s2.test:8500", 8500, False),
        ("s3.test:8500", 8500, False),
    ]
    assert {m.port for m in group_members(2, "s{i}.test", "127.0.0.1", 9000)} == {9000}


def test_without_a_template_each_member_has_a_port_of_its_own() -> None:
    """Without a template, members are ``<bind>:<free port>``, each on its own listener."""
    members = group_members(2, None, "127.0.0.1", None)
    assert [m.server_name for m in members] == [f"127.0.0.1:{m.port}" for m in members]
    assert members[0].port != members[1].port
    assert all(m.own_listener for m in members)


@pytest.mark.parametrize(
    ("count", "template", "port"),
    [(0, None, None), (2, "s.test", None), (2, "s{i}.test:1", 2)],
)
def test_impossible_groups_are_refused(count: int, template: str | None, port: int | None) -> None:
    """No servers, a template without ``{i}``, or a port against the template's: ValueError."""
    with pytest.raises(ValueError):
        group_members(count, template, "127.0.0.1", port)


def test_the_config_serves_every_member_with_certificates_from_one_ca(tmp_path: Path) -> None:
    """The config's primary is the first member, ``servers:`` the others; every
    certificate is issued by the one CA, for its server's name."""
    members = group_members(3, "s{i}.test:8500", "127.0.0.1", None)
    files, config_path = write_group_files(tmp_path, members, "127.0.0.1", GroupOptions())
    config = load_config(config_path)
    assert [s.server_name for s in config.every_server] == [m.server_name for m in members]
    assert {f.control_token for f in files} == {config.control_token}
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for server in config.every_server:
        assert server.tls_certificate_path is not None
        cert = x509.load_pem_x509_certificate(server.tls_certificate_path.read_bytes())
        assert cert.issuer == ca.subject
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [server.server_name.split(":")[0]]
