"""Property tests (hypothesis): server names, X-Matrix headers, canonical JSON round trips."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import canonicaljson
from hypothesis import given, settings
from hypothesis import strategies as st

from stubserver.auth.xmatrix import (
    MalformedAuthorization,
    XMatrixCredentials,
    format_authorization_header,
    parse_authorization_header,
)
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.canonical_json import (
    MAX_SAFE_INTEGER,
    BadJson,
    encode_canonical_json,
    parse_json_bytes,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
DNS_NAMES = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
IPV4_LITERALS = st.ip_addresses(v=4).map(str)
IPV6_LITERALS = st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
HOSTS = st.one_of(DNS_NAMES, IPV4_LITERALS, IPV6_LITERALS)
PORTS = st.one_of(st.none(), st.integers(min_value=1, max_value=65535))


@st.composite
def server_names(draw: st.DrawFn) -> tuple[str, str, int | None]:
    """A valid server name, with its host and port."""
    host = draw(HOSTS)
    port = draw(PORTS)
    return (host if port is None else f"{host}:{port}"), host, port


@given(server_names())
@PROPERTY_SETTINGS
def test_valid_server_names_round_trip(case: tuple[str, str, int | None]) -> None:
    """A generated server name parses to its host and port, and str() gives it back."""
    text, host, port = case
    parsed = parse_server_name(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert str(parsed) == text


@given(st.text(max_size=300))
@PROPERTY_SETTINGS
def test_server_name_parser_only_raises_its_error(text: str) -> None:
    """Any text either parses (and round-trips) or raises InvalidServerName."""
    try:
        parsed = parse_server_name(text)
    except InvalidServerName:
        return
    assert str(parsed) == text


KEY_IDS = st.from_regex(r"\Aed25519:[A-Za-z0-9_]{1,12}\Z")
SIGNATURES = st.from_regex(r"\A[A-Za-z0-9+/]{8,90}\Z")


@st.composite
def credentials(draw: st.DrawFn) -> XMatrixCredentials:
    """Valid X-Matrix credentials."""
    return XMatrixCredentials(
        origin=draw(server_names())[0],
        key_id=draw(KEY_IDS),
        signature=draw(SIGNATURES),
        destination=draw(st.one_of(st.none(), server_names().map(lambda c: c[0]))),
    )


@given(credentials())
@PROPERTY_SETTINGS
def test_xmatrix_round_trip(value: XMatrixCredentials) -> None:
    """format_authorization_header then parse_authorization_header gives the credentials back."""
    assert parse_authorization_header(format_authorization_header(value)) == value


@given(st.binary(max_size=600) | st.text(max_size=300).map(lambda t: ("X-Matrix " + t).encode()))
@PROPERTY_SETTINGS
def test_xmatrix_parser_only_raises_its_error(header: bytes) -> None:
    """Any header value either parses or raises MalformedAuthorization."""
    with contextlib.suppress(MalformedAuthorization):
        parse_authorization_header(header)


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER),
    st.text(),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
@PROPERTY_SETTINGS
def test_canonical_json_round_trip(value: Any) -> None:
    """encode -> parse -> encode is stable, equals the input and the reference encoder."""
    encoded = encode_canonical_json(value)
    assert parse_json_bytes(encoded) == value
    assert encode_canonical_json(parse_json_bytes(encoded)) == encoded
    assert encoded == canonicaljson.encode_canonical_json(value)


@given(st.dictionaries(st.text(), JSON_SCALARS, min_size=1, max_size=8))
@PROPERTY_SETTINGS
def test_canonical_json_sorted_and_compact(value: dict[str, Any]) -> None:
    """Keys come out sorted by code point, with no whitespace between tokens."""
    encoded = encode_canonical_json(value)
    assert list(parse_json_bytes(encoded)) == sorted(value)
    assert encoded == encode_canonical_json(dict(sorted(value.items(), reverse=True)))
    compact = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert encoded == compact.encode("utf-8")


@given(st.binary(max_size=500))
@PROPERTY_SETTINGS
def test_json_parser_only_raises_bad_json(body: bytes) -> None:
    """Any bytes either parse or raise BadJson (never RecursionError or anything else)."""
    with contextlib.suppress(BadJson):
        parse_json_bytes(body)


@given(
    st.lists(
        st.one_of(
            st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}"),
            st.integers(0, 0xFFFF).map(lambda c: f"\\u{c:04x}"),
            st.sampled_from(["a", "\\\\", "1e400", "é"]),
        ),
        max_size=6,
    )
)
@PROPERTY_SETTINGS
def test_json_strings_with_escapes_parse_only_if_encodable(parts: list[str]) -> None:
    """A JSON string of any \\u escapes (lone surrogates, pairs) either is refused with
    BadJson or parses to a value canonicaljson encodes."""
    body = ('["' + "".join(parts) + '"]').encode("utf-8")
    try:
        value = parse_json_bytes(body)
    except BadJson:
        return
    canonicaljson.encode_canonical_json(value)
