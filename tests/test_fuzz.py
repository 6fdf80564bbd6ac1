"""A fuzz run of every parser that reads untrusted input, with a fixed budget for CI.

Each parser gets :data:`FUZZ_EXAMPLES` derandomized inputs (the same ones on every run,
so CI is reproducible) and must either succeed or raise its own typed error: never a
RecursionError, an IndexError or anything else.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import canonicaljson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stubserver.auth.xmatrix import MalformedAuthorization, parse_authorization_header
from stubserver.config import ConfigError, load_config
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.server_keys.key_response_check import check_key_response
from stubserver.signing.canonical_json import BadJson, parse_json_bytes
from stubserver.signing.keys import InvalidKeyFile, parse_signing_key_file

#: Inputs per parser on each run.
FUZZ_EXAMPLES = 1000
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Fragments that steer random bytes towards each format's interesting corners.
_JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b":",
    b",",
    b"1e999",
    b"NaN",
    b"-",
    b"9007199254740993",
    b'"a"',
    b"true",
    b"null",
    b"\xff",
    b"\\ud800",
    b" ",
]
_YAML_TOKENS = [
    "server_name: ",
    "listeners:",
    "\n",
    "  - ",
    "port: ",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "!!python/object",
    "bind_addresses: ",
    "'",
    '"',
    "a.test",
    "99999",
    "key_refresh_interval: ",
    "1d",
    "-1",
    "users:",
    ": ",
    "\t",
    "~",
]
_XMATRIX_TOKENS = [
    "X-Matrix ",
    "origin=",
    "key=",
    "sig=",
    "destination=",
    '"',
    "\\",
    ",",
    "ed25519:a",
    "a.test",
    "[::1]",
    ":8448",
    " ",
    "=",
    "\x00",
    "é",
]
_KEYFILE_TOKENS = ["ed25519 ", "a_1 ", "AAAA", "=", "\n", " ", "rsa ", "+/", "é", "\r"]


def _joined_bytes(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from(tokens) | st.binary(max_size=3), max_size=60).map(b"".join),
    )


def _joined_text(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=200),
        st.lists(st.sampled_from(tokens) | st.text(max_size=3), max_size=60).map("".join),
    )


@given(_joined_text([".", ":", "[", "]", "::", "a", "1", "-", "65536", "0"]))
@FUZZ_SETTINGS
def test_fuzz_server_names(text: str) -> None:
    """The server-name parser raises nothing but InvalidServerName."""
    with contextlib.suppress(InvalidServerName):
        parse_server_name(text)


@given(_joined_text(_XMATRIX_TOKENS).map(lambda t: t.encode("utf-8", "surrogatepass")))
@FUZZ_SETTINGS
def test_fuzz_xmatrix(header: bytes) -> None:
    """The X-Matrix parser raises nothing but MalformedAuthorization."""
    with contextlib.suppress(MalformedAuthorization):
        parse_authorization_header(header)


@given(_joined_bytes(_JSON_TOKENS))
@FUZZ_SETTINGS
def test_fuzz_json(body: bytes) -> None:
    """The strict JSON parser raises nothing but BadJson, and whatever it accepts the
    libraries encode (canonicaljson, and JSON without NaN for answers and the log)."""
    try:
        value = parse_json_bytes(body)
    except BadJson:
        return
    canonicaljson.encode_canonical_json(value)
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


@given(_joined_text(_KEYFILE_TOKENS))
@FUZZ_SETTINGS
def test_fuzz_signing_key_file(text: str) -> None:
    """The signing-key file parser raises nothing but InvalidKeyFile."""
    with contextlib.suppress(InvalidKeyFile):
        parse_signing_key_file(text)


_FOLDER = Path(tempfile.mkdtemp(prefix="stubserver-fuzz-"))


@given(_joined_text(_YAML_TOKENS).map(lambda t: t.encode("utf-8", "surrogatepass")))
@FUZZ_SETTINGS
def test_fuzz_config(data: bytes) -> None:
    """Loading a config file raises nothing but ConfigError, whatever the file holds."""
    path = _FOLDER / "fuzz.yaml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_config(path)


_KEY_DOCUMENT_FIELDS = st.sampled_from(
    ["server_name", "verify_keys", "old_verify_keys", "valid_until_ts", "signatures", "key"]
)
_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_KEY_DOCUMENT_FIELDS | st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=25,
)


@given(_JSON_VALUES)
@FUZZ_SETTINGS
def test_fuzz_key_document(document: object) -> None:
    """Checking a fetched key document never raises: every fault is a failed check."""
    check = check_key_response(document, "a.test", 1_700_000_000_000)
    assert check.error is not None  # no random document is validly self-signed
