"""``Peer.attach``: drive a running peer from its config (no process of ours)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stubserver.testing import Peer
from stubserver.testing._files import write_peer_files


def _files(tmp_path: Path, control_bind: str, control_port: int) -> Path:
    files = write_peer_files(
        tmp_path,
        server_name="peer.test:8448",
        bind="127.0.0.40",
        port=8448,
        ca=None,
        dns_servers=(),
        allow_ips=(),
        ca_files=(),
        tls_name_list=(),
        room_version=None,
        invites="accept",
        users=None,
        extra_config=None,
    )
    raw = yaml.safe_load(files.config_path.read_text())
    for listener in raw["listeners"]:
        if "control" in listener["resources"]:
            listener["bind_addresses"] = [control_bind]
            listener["port"] = control_port
    files.config_path.write_text(yaml.safe_dump(raw))
    return files.config_path


def test_attach_reads_control_listener_token_and_identity(tmp_path: Path) -> None:
    """The control API is the config's control listener (bind address and port) with its
    control_token; the server name and federation port are the config's."""
    config = _files(tmp_path, "127.0.0.41", 8109)
    peer = Peer.attach(config)
    token = yaml.safe_load(config.read_text())["control_token"]
    assert (peer._control.host, peer._control.port) == ("127.0.0.41", 8109)
    assert peer.files.control_token == token
    assert peer.server_name == "peer.test:8448"
    assert (peer.federation_address, peer.federation_port) == ("127.0.0.40", 8448)
    assert peer.config_path == config


def test_attach_to_a_wildcard_control_listener_connects_to_loopback(tmp_path: Path) -> None:
    """A control listener bound to 0.0.0.0 is reached on 127.0.0.1."""
    peer = Peer.attach(_files(tmp_path, "0.0.0.0", 8109))
    assert peer._control.host == "127.0.0.1"


def test_closing_an_attached_peer_stops_nothing(tmp_path: Path) -> None:
    """close() on an attached peer returns without stopping anything (it is not ours)."""
    peer = Peer.attach(_files(tmp_path, "127.0.0.1", 8109))
    peer.close()
    assert peer.process.running


def test_attach_without_a_control_listener_is_refused(tmp_path: Path) -> None:
    """A config with no control listener cannot be attached to: ValueError naming it."""
    config = _files(tmp_path, "127.0.0.1", 8109)
    raw = yaml.safe_load(config.read_text())
    raw["listeners"] = [x for x in raw["listeners"] if "control" not in x["resources"]]
    raw.pop("control_token")
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="no control listener"):
        Peer.attach(config)
