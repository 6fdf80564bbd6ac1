"""``stubserver room``: the control API's client, against an in-memory fake of the API and
once through a real loopback socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stubserver.cli import room
from stubserver.cli.main import build_parser
from stubserver.cli.main import main as cli_main
from stubserver.config import ConfigError
from stubserver.control.client import ControlAnswer, ControlEndpoint, http_transport
from stubserver.signing.keys import ServerSigningKey

ROOM = "!r:a.test"
MESSAGE = {
    "event_id": "$m",
    "origin": "b.test",
    "outcome": "accepted",
    "reason": None,
    "pdu": {"type": "m.room.message", "sender": "@bob:b.test", "content": {"body": "hi"}},
}
MEMBER = {
    "event_id": "$j",
    "origin": "b.test",
    "outcome": "accepted",
    "reason": None,
    "pdu": {"type": "m.room.member", "sender": "@bob:b.test", "content": {}},
}


class FakeApi:
    """Answers ``(method, path)`` from ``answers`` (a list answers in turn); records calls."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, Any, float]] = []

    def __call__(self, method: str, path: str, body: Any, timeout: float) -> ControlAnswer:
        self.calls.append((method, path, body, timeout))
        answer = self.answers[(method, path.split("?", maxsplit=1)[0])]
        if isinstance(answer, list):
            answer = answer.pop(0)
        return answer if isinstance(answer, ControlAnswer) else ControlAnswer(200, answer)


def run(api: FakeApi, *argv: str) -> int:
    full = ["room", *argv, "-c", "unused.yaml"]
    args = build_parser(full).parse_args(full)
    return room.main(args, transport=api)


def test_create_posts_the_options_and_prints_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    """create sends creator, version, preset and alias, and prints the room aligned."""
    api = FakeApi(
        {
            ("POST", "/_stubserver/v1/rooms"): {
                "room_id": ROOM,
                "room_version": "11",
                "event_ids": ["$a"],
            }
        }
    )
    assert (
        run(api, "create", "--creator", "al", "--version", "11", "--private", "--alias", "lobby")
        == 0
    )
    assert api.calls[0][2] == {
        "creator": "al",
        "room_version": "11",
        "preset": "private_chat",
        "alias": "lobby",
    }
    assert capsys.readouterr().out == f"room_id       {ROOM}\nroom_version  11\n"


def test_json_prints_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the API's answer as one JSON object."""
    answer = {"room_id": ROOM, "room_version": "12", "event_ids": []}
    api = FakeApi({("POST", "/_stubserver/v1/rooms"): answer})
    assert run(api, "create", "--public", "--json") == 0
    assert api.calls[0][2] == {"creator": room.DEFAULT_USER, "preset": "public_chat"}
    assert json.loads(capsys.readouterr().out) == answer


def test_server_addresses_one_server_of_several_through_its_prefix() -> None:
    """``--server NAME`` sends the same request under ``/_stubserver/v1/servers/NAME``."""
    answer = {"room_id": ROOM, "room_version": "12", "event_ids": []}
    api = FakeApi({("POST", "/_stubserver/v1/servers/s2.test:8448/rooms"): answer})
    assert run(api, "create", "--server", "s2.test:8448") == 0
    assert [call[1] for call in api.calls] == ["/_stubserver/v1/servers/s2.test:8448/rooms"]


def test_join_encodes_an_alias_and_sends_via() -> None:
    """join percent-encodes the alias in the path and sends every --via."""
    api = FakeApi(
        {
            ("POST", "/_stubserver/v1/rooms/%23lobby%3Ab.test/join"): {
                "room_id": ROOM,
                "room_version": "12",
                "event_id": "$j",
            }
        }
    )
    assert (
        run(api, "join", "#lobby:b.test", "--via", "b.test", "--via", "c.test", "--user", "al") == 0
    )
    assert api.calls[0][2] == {"user": "al", "via": ["b.test", "c.test"]}


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (
            ["hello"],
            {
                "sender": "stubserver",
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": "hello"},
            },
        ),
        (
            ["--type", "m.room.name", "--content", '{"name": "N"}', "--state-key", ""],
            {
                "sender": "stubserver",
                "type": "m.room.name",
                "content": {"name": "N"},
                "state_key": "",
            },
        ),
    ],
    ids=["text", "typed"],
)
def test_send(argv: list[str], body: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """send TEXT sends an m.text message; --type/--content/--state-key send that event."""
    api = FakeApi({("POST", "/_stubserver/v1/rooms/%21r%3Aa.test/send"): {"event_id": "$e"}})
    assert run(api, "send", ROOM, *argv) == 0
    assert api.calls[0][2] == body
    assert capsys.readouterr().out == "event_id  $e\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["hi", "--type", "t", "--content", "{}"],
        ["--type", "t"],
        ["--content", "{}"],
        ["--type", "t", "--content", "[]"],
        ["--type", "t", "--content", "{"],
    ],
    ids=["nothing", "both", "no content", "no type", "not an object", "not json"],
)
def test_send_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """send without exactly one of TEXT and --type/--content is bad usage (exit 2)."""
    api = FakeApi({})
    path = Path("unused.yaml")
    full = ["room", "send", ROOM, *argv, "-c", str(path)]
    args = build_parser(full).parse_args(full)
    with pytest.raises(ConfigError):
        room.main(args, transport=api)
    assert api.calls == []


def test_invite_and_leave() -> None:
    """invite sends sender and user_id; leave sends the user."""
    api = FakeApi(
        {
            ("POST", "/_stubserver/v1/rooms/%21r%3Aa.test/invite"): {"event_id": "$i"},
            ("POST", "/_stubserver/v1/rooms/%21r%3Aa.test/leave"): {"event_id": "$l"},
        }
    )
    assert run(api, "invite", ROOM, "@bob:b.test", "--user", "al") == 0
    assert run(api, "leave", ROOM) == 0
    assert [c[2] for c in api.calls] == [
        {"sender": "al", "user_id": "@bob:b.test"},
        {"user": "stubserver"},
    ]


def test_show_lists_the_room(capsys: pytest.CaptureFixture[str]) -> None:
    """show prints the room's version, servers, extremities and members, aligned."""
    api = FakeApi(
        {
            ("GET", "/_stubserver/v1/rooms/%21r%3Aa.test"): {
                "room_id": ROOM,
                "room_version": "12",
                "state": [{}, {}],
                "servers": ["a.test"],
                "members": {"@al:a.test": "join"},
                "forward_extremities": ["$x"],
            }
        }
    )
    assert run(api, "show", ROOM) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"room_id              {ROOM}"
    assert "@al:a.test           join" in out


def test_wait_returns_the_first_matching_event(capsys: pytest.CaptureFixture[str]) -> None:
    """wait long-polls from 0 and on from each answer's next, and prints the first event
    of the type and sender asked for (exit 0)."""
    path = ("GET", "/_stubserver/v1/rooms/%21r%3Aa.test/events")
    api = FakeApi({path: [{"events": [MEMBER], "next": 1}, {"events": [MESSAGE], "next": 2}]})
    assert (
        run(api, "wait", ROOM, "--type", "m.room.message", "--sender", "@bob:b.test", "--json") == 0
    )
    assert json.loads(capsys.readouterr().out) == MESSAGE
    assert [c[1].split("?")[1].split("&")[0] for c in api.calls] == ["from=0", "from=1"]


def test_wait_times_out_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """With no matching event by the timeout, wait exits 1 and says so."""
    path = ("GET", "/_stubserver/v1/rooms/%21r%3Aa.test/events")
    api = FakeApi({path: {"events": [MEMBER], "next": 1}})
    assert run(api, "wait", ROOM, "--type", "m.room.message", "--timeout", "0") == 1
    assert "no matching event" in capsys.readouterr().err
    assert "wait_ms=0" in api.calls[-1][1]


def test_a_remote_refusal_exits_1_showing_its_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """A 502 from the API exits 1 and shows the remote's status and body."""
    refusal = {
        "errcode": "M_UNKNOWN",
        "error": "b.test refused make_join: HTTP 403",
        "remote_status": 403,
        "remote_body": {"errcode": "M_FORBIDDEN"},
    }
    api = FakeApi(
        {("POST", "/_stubserver/v1/rooms/%21r%3Ab.test/join"): ControlAnswer(502, refusal)}
    )
    assert run(api, "join", "!r:b.test", "--via", "b.test") == 1
    err = capsys.readouterr().err
    assert "b.test refused make_join" in err
    assert 'remote answered HTTP 403: {"errcode": "M_FORBIDDEN"}' in err


@pytest.mark.parametrize(("status", "exit_status"), [(400, 2), (401, 2), (404, 1), (403, 1)])
def test_api_errors_map_to_exit_statuses(status: int, exit_status: int) -> None:
    """400 and 401 (bad argument, wrong token) are bad usage; other refusals exit 1."""
    api = FakeApi(
        {
            ("GET", "/_stubserver/v1/rooms/%21r%3Aa.test"): ControlAnswer(
                status, {"errcode": "M_X", "error": "no"}
            )
        }
    )
    assert run(api, "show", ROOM) == exit_status


# --- the config and the real transport -------------------------------------------------------


def write_config(tmp_path: Path, listeners: list[dict[str, Any]], **more: Any) -> Path:
    (tmp_path / "s.key").write_text(ServerSigningKey.generate("a_r").to_line())
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {"server_name": "a.test", "signing_key_path": "s.key", "listeners": listeners, **more}
        )
    )
    return path


def test_a_config_without_control_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config with no control listener is a config error naming listeners (exit 2)."""
    path = write_config(tmp_path, [])
    assert cli_main(["room", "show", ROOM, "-c", str(path)]) == 2
    assert "listeners: no listener serves control" in capsys.readouterr().err


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps(
            {
                "room_id": ROOM,
                "room_version": "12",
                "state": [],
                "servers": [],
                "members": {},
                "forward_extremities": [],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_config_names_address_and_token(
    tmp_path: Path, loopback_api: ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """room show reaches the config's control listener over loopback with its token."""
    port = loopback_api.server_address[1]
    path = write_config(
        tmp_path,
        [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": ["control"]}],
        control_token="t0k",
    )
    _Handler.seen.clear()
    assert cli_main(["room", "show", ROOM, "-c", str(path), "--json"]) == 0
    assert _Handler.seen == [("/_stubserver/v1/rooms/%21r%3Aa.test", "Bearer t0k")]
    assert json.loads(capsys.readouterr().out)["room_id"] == ROOM


def test_an_unreachable_api_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A control API that refuses the connection is a failed operation (exit 1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()
    argv = ["room", "show", ROOM, "-c", "unused.yaml"]
    args = build_parser(argv).parse_args(argv)
    transport = http_transport(ControlEndpoint("127.0.0.1", port, "t"))
    assert room.main(args, transport=transport) == 1
    assert "cannot reach the control API" in capsys.readouterr().err
