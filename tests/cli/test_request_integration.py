"""``stubserver request`` between two real stubservers on loopback, and its pure parts.

The integration test starts two ``stubserver run`` processes with certificates from a
test CA, named by IP literal and explicit port (so resolution needs no DNS), each
allowing loopback in its blocklist and trusting the CA. The sender signs with its key;
the receiver fetches the sender's keys over real TLS, authenticates, answers and logs.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from stubserver.auth.xmatrix import sign_request
from stubserver.cli.request import (
    RequestOutcome,
    UsageError,
    format_outcome,
    outcome_from_response,
    plan_request,
)
from stubserver.tls.certificates import make_ca
from tests.support import https_request, run_stubserver_cli, start_stubserver, write_stub_files

SENDER_ADDRESS = "127.0.0.61"
RECEIVER_ADDRESS = "127.0.0.62"


class PlanTests(SynchronousTestCase):
    def test_method_defaults(self) -> None:
        """GET without -d, POST with it; -X wins and is upper-cased."""
        assert plan_request("a.test", "/_matrix/x", None, None).method == "GET"
        plan = plan_request("a.test", "/_matrix/x", None, '{"a": 1}')
        assert (plan.method, plan.content) == ("POST", {"a": 1})
        assert plan_request("a.test", "/_matrix/x", "put", "{}").method == "PUT"

    def test_bad_usage(self) -> None:
        """Bad JSON, a bad name, a bad path or a bad method are usage errors."""
        for name, path, method, data in [
            ("a.test", "/x", None, "{nope"),
            ("a.test", "/x", None, '{"a": NaN}'),
            ("a b", "/x", None, None),
            ("a.test", "x", None, None),
            ("a.test", "/x", "GE T", None),
        ]:
            with self.subTest(name=name, path=path, data=data), pytest.raises(UsageError):
                plan_request(name, path, method, data)


class OutcomeTests(SynchronousTestCase):
    def test_success(self) -> None:
        """A 2xx JSON answer has no error."""
        outcome = outcome_from_response(200, b'{"displayname": "A"}', None)
        assert outcome.to_json() == {
            "status": 200,
            "body": {"displayname": "A"},
            "target": None,
            "error": None,
        }
        assert outcome.ok

    def test_matrix_error(self) -> None:
        """A Matrix error names the status, errcode and message."""
        outcome = outcome_from_response(401, b'{"errcode": "M_UNAUTHORIZED", "error": "no"}', None)
        assert outcome.error == "HTTP 401: M_UNAUTHORIZED: no"
        assert not outcome.ok

    def test_not_json(self) -> None:
        """A body that is not JSON is reported and the body is null."""
        outcome = outcome_from_response(200, b"<html>", None)
        assert outcome.body is None
        assert outcome.error is not None
        assert "not JSON" in outcome.error

    def test_human_report_failure_first(self) -> None:
        """Without --json the failure comes first, then status, target and body."""
        out = io.StringIO()
        target = {
            "host": "::1",
            "port": 8448,
            "addresses": ["::1"],
            "host_header": "[::1]:8448",
            "tls_server_name": "::1",
            "source": "ip_literal",
        }
        format_outcome(
            outcome_from_response(404, b'{"errcode": "M_NOT_FOUND", "error": "x"}', target), out
        )
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["FAILED", "HTTP", "404:", "M_NOT_FOUND:", "x"]
        assert lines[1].split() == ["status", "404"]
        assert lines[2].startswith("target  [::1]:8448 (::1)")

    def test_no_response(self) -> None:
        """Without a response the status is null."""
        assert not RequestOutcome(None, None, None, "refused").ok


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
def test_signed_request_between_two_stubservers(tmp_path: Path) -> None:
    """A signed request reaches the other stubserver's profile, and every rejection is
    answered with the right error and logged as rejected."""
    ca = make_ca()
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    common = {
        "federation_custom_ca_list": [str(ca_path)],
        "ip_range_allowlist": ["127.0.0.0/8"],
    }
    sender_port = _free_port(SENDER_ADDRESS)
    receiver_port = _free_port(RECEIVER_ADDRESS)
    sender_name = f"{SENDER_ADDRESS}:{sender_port}"
    receiver_name = f"{RECEIVER_ADDRESS}:{receiver_port}"
    log_path = tmp_path / "receiver-requests.jsonl"
    sender = write_stub_files(
        tmp_path / "sender",
        sender_name,
        ca,
        bind=SENDER_ADDRESS,
        port=sender_port,
        extra_config=common,
    )
    receiver = write_stub_files(
        tmp_path / "receiver",
        receiver_name,
        ca,
        bind=RECEIVER_ADDRESS,
        port=receiver_port,
        extra_config={
            **common,
            "users": {"alice": {"displayname": "Alice"}},
            "request_log_path": str(log_path),
        },
    )
    # Same server name as the sender, another key: its signatures cannot verify.
    impostor = write_stub_files(
        tmp_path / "impostor",
        sender_name,
        ca,
        bind=SENDER_ADDRESS,
        port=sender_port,
        extra_config=common,
    )
    user_id = f"%40alice%3A{receiver_name.replace(':', '%3A')}"
    profile = f"/_matrix/federation/v1/query/profile?user_id={user_id}"

    with start_stubserver(sender.config_path), start_stubserver(receiver.config_path) as rx:
        good = run_stubserver_cli(
            "request", receiver_name, profile, "--json", "-c", str(sender.config_path)
        )
        assert good.returncode == 0, good.stderr
        out = json.loads(good.stdout)
        assert (out["status"], out["body"], out["error"]) == (200, {"displayname": "Alice"}, None)
        assert out["target"]["host"] == RECEIVER_ADDRESS
        assert out["target"]["port"] == receiver_port
        assert out["target"]["source"] == "ip_literal"

        bad = run_stubserver_cli(
            "request", receiver_name, profile, "--json", "-c", str(impostor.config_path)
        )
        assert bad.returncode == 1, bad.stderr
        out = json.loads(bad.stdout)
        assert (out["status"], out["body"]["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "Invalid signature" in out["error"]

        wrong = sign_request(
            "GET",
            profile,
            origin=sender_name,
            destination="elsewhere.test",
            key=sender.signing_key,
        )
        answer = https_request(
            RECEIVER_ADDRESS,
            receiver_port,
            profile,
            ca_pem=ca.cert_pem,
            server_hostname=RECEIVER_ADDRESS,
            headers={"Authorization": wrong.decode()},
        )
        assert (answer.status, answer.json()["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "Destination mismatch" in answer.json()["error"]

        unsigned = https_request(
            RECEIVER_ADDRESS,
            receiver_port,
            profile,
            ca_pem=ca.cert_pem,
            server_hostname=RECEIVER_ADDRESS,
        )
        assert (unsigned.status, unsigned.json()["errcode"]) == (401, "M_UNAUTHORIZED")

        # Shutting down flushes the log: every line is there afterwards.
        assert rx.terminate() == 0

    lines = _read_log(log_path)
    assert [(x["status"], x["origin"], x["authenticated"]) for x in lines] == [
        (200, sender_name, True),
        (401, sender_name, False),
        (401, sender_name, False),
        (401, None, False),
    ]
    assert all(x["method"] == "GET" and x["uri"] == profile for x in lines)
    assert lines[0]["auth_error"] is None
    assert "Invalid signature" in lines[1]["auth_error"]
    assert "Destination mismatch" in lines[2]["auth_error"]
    assert lines[3]["auth_error"] == "Missing Authorization headers"
    assert all(x["content"] is None and isinstance(x["ts"], int) for x in lines)
