"""Server names, canonical JSON, base64 and JSON signing against the spec's vectors."""

from __future__ import annotations

import json
from typing import Any

import canonicaljson
import pytest
import signedjson.key
import signedjson.sign
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from stubserver.discovery.server_name import (
    InvalidServerName,
    is_valid_server_name,
    parse_server_name,
)
from stubserver.signing.canonical_json import (
    MAX_JSON_DEPTH,
    BadJson,
    CanonicalJsonError,
    _depth_exceeds,
    encode_canonical_json,
    holds_float,
    parse_json_bytes,
)
from stubserver.signing.keys import (
    InvalidBase64,
    InvalidKeyFile,
    ServerSigningKey,
    SignatureError,
    decode_base64,
    encode_base64,
    parse_signing_key_file,
    sign_json,
    verify_signed_json,
)

# Spec appendix "Cryptographic Test Vectors".
SPEC_SEED = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
SPEC_KEY = ServerSigningKey(version="1", key=SigningKey(SPEC_SEED))
SPEC_SIGNATURES = [
    ({}, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"),
    (
        {"one": 1, "two": "Two"},
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
    ),
]


# ---- server names (spec appendix "Server Name"; Synapse where the grammar leaves room)

VALID_NAMES = [
    ("matrix.org", "matrix.org", None, False),
    ("matrix.org:8888", "matrix.org", 8888, False),
    ("1.2.3.4", "1.2.3.4", None, True),
    ("1.2.3.4:1234", "1.2.3.4", 1234, True),
    ("[1234:5678::abcd]", "1234:5678::abcd", None, True),
    ("[1234:5678::abcd]:5678", "1234:5678::abcd", 5678, True),
    ("localhost", "localhost", None, False),
    ("999.1.1.1", "999.1.1.1", None, False),  # not an IPv4 address, still a dns-name
    ("a-b.example", "a-b.example", None, False),
    ("EXAMPLE.org", "EXAMPLE.org", None, False),
    ("[::ffff:1.2.3.4]", "::ffff:1.2.3.4", None, True),
    ("x:65535", "x", 65535, False),
]

INVALID_NAMES = [
    "",
    "matrix.org:",
    "matrix.org:0",
    "matrix.org:65536",
    "matrix.org:123456",
    "matrix.org:8a",
    "[1234:5678::abcd",
    "[1234:5678::abcd]x",
    "[not-ipv6]",
    "[12345::]",
    "under_score.org",
    "spa ce.org",
    "bücher.de",
    "a" * 256,
    "1.2.3.4:-1",
    "matrix.org:80:80",
]


@pytest.mark.parametrize(("text", "bare", "port", "is_ip"), VALID_NAMES)
def test_valid_server_names(text: str, bare: str, port: int | None, is_ip: bool) -> None:
    """Valid server names parse into host, port and IP-literal-ness, and print back."""
    name = parse_server_name(text)
    assert (name.bare_host, name.port, name.is_ip_literal) == (bare, port, is_ip)
    assert str(name) == text
    assert is_valid_server_name(text)


@pytest.mark.parametrize("text", INVALID_NAMES)
def test_invalid_server_names(text: str) -> None:
    """Invalid server names raise InvalidServerName."""
    with pytest.raises(InvalidServerName):
        parse_server_name(text)
    assert not is_valid_server_name(text)


# ---- canonical JSON (spec appendix "Canonical JSON", examples)

CANONICAL_EXAMPLES: list[tuple[Any, str]] = [
    ({}, "{}"),
    ({"one": 1, "two": "Two"}, '{"one":1,"two":"Two"}'),
    ({"b": "2", "a": "1"}, '{"a":"1","b":"2"}'),
    (
        {
            "auth": {
                "success": True,
                "mxid": "@john.doe:example.com",
                "profile": {
                    "display_name": "John Doe",
                    "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"},
                    ],
                },
            }
        },
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ({"a": "日本語"}, '{"a":"日本語"}'),
    ({"本": 2, "日": 1}, '{"日":1,"本":2}'),
    ({"a": "\u65e5"}, '{"a":"日"}'),
    ({"a": None}, '{"a":null}'),
    ({"a": '\x00\x1f"\\'}, '{"a":"\\u0000\\u001f\\"\\\\"}'),
]


@pytest.mark.parametrize(("value", "expected"), CANONICAL_EXAMPLES)
def test_canonical_json_examples(value: Any, expected: str) -> None:
    """The spec's canonical JSON examples encode exactly."""
    assert encode_canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_of_parsed_spec_example() -> None:
    """{"a": -0, "b": 1e10} is canonically {"a":0,"b":10000000000} (spec example)."""
    assert encode_canonical_json({"a": 0, "b": 10_000_000_000}) == b'{"a":0,"b":10000000000}'


@pytest.mark.parametrize("value", [{"a": 1.5}, {"a": 2**53}, {"a": -(2**53)}, {1: "x"}, {"a": {1}}])
def test_canonical_json_refuses(value: Any) -> None:
    """Floats, integers out of range, non-string keys and non-JSON types are refused."""
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json(value)


@pytest.mark.parametrize(
    ("body", "not_json"),
    [
        (b"{", True),
        (b"\xff", True),
        (b'{"a": NaN}', False),
        (b'{"a": 9007199254740992}', False),
        (b'{"a": 1, "a": 2}', False),
        (b"[" * 101 + b"]" * 101, False),
    ],
)
def test_parse_json_bytes_refuses(body: bytes, not_json: bool) -> None:
    """Untrusted JSON is parsed strictly; not_json tells M_NOT_JSON from M_BAD_JSON."""
    with pytest.raises(BadJson) as info:
        parse_json_bytes(body)
    assert info.value.not_json is not_json


def _depth_exceeds_by_loop(text: str, limit: int) -> bool:
    """The per-character depth scan the production check replaced: the oracle."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return (
        b'{"a":[' * (depth // 2)
        + b"[" * (depth % 2)
        + inner
        + b"]" * (depth % 2)
        + b"]}" * (depth // 2)
    )


@pytest.mark.parametrize(
    ("body", "exceeds"),
    [
        (_nested(16), False),
        (_nested(17), False),
        (_nested(100), False),
        (_nested(101), True),
        (b'{"a": "' + b"[" * 200 + b'"}', False),
        (b'{"a": "\\"' + b"[" * 200 + b'"}', False),
        (b'{"pdus": [' + b"{}," * 10_000 + b"{}]}", False),
        (b"[" * 101, True),
        (b"[}" * 60, False),
        (b'"[' + b"[" * 200, False),
    ],
)
def test_the_fast_depth_check_agrees_with_the_character_loop(body: bytes, exceeds: bool) -> None:
    """Issue 22: the depth check done with regular expressions and counts answers as the
    character loop it replaced (kept here as the oracle) does, for nesting either side of
    the limit, brackets inside strings (escaped quotes too), unbalanced and unterminated
    input."""
    text = body.decode()
    assert _depth_exceeds_by_loop(text, MAX_JSON_DEPTH) is exceeds
    assert _depth_exceeds(text, MAX_JSON_DEPTH) is exceeds


@pytest.mark.parametrize(
    ("body", "exceeds"),
    [
        (b"[" + b"[[]]," * 50_000 + b"[]]", False),
        (b"[" * 100 + b"[]," * 1_000 + b"[]" + b"]" * 100, True),
        (b"[" * 99 + b"{}," * 1_000 + b"{}" + b"]" * 99, False),
        (b"]" * 200 + b"[" * 301, True),
        (b"]" * 200 + b"[" * 300, False),
        (b"[" * 150 + b"]" * 150 + b"[]" * 10, True),
    ],
)
def test_the_rounds_of_pair_removal_agree_with_the_character_loop(
    body: bytes, exceeds: bool
) -> None:
    """Issue 22: wide bodies (many brackets, little nesting), which the pair-removal
    rounds decide, and too deep or unbalanced ones, which the running sum decides, are
    judged as the character loop judges them."""
    text = body.decode()
    assert _depth_exceeds_by_loop(text, MAX_JSON_DEPTH) is exceeds
    assert _depth_exceeds(text, MAX_JSON_DEPTH) is exceeds


@given(st.text(alphabet='[]{}"\\a', max_size=400), st.integers(min_value=0, max_value=8))
def test_the_depth_check_agrees_with_the_character_loop_on_any_text(text: str, limit: int) -> None:
    """Issue 22: on any mix of brackets, quotes, backslashes and other characters, the
    depth check answers as the character loop it replaced, whatever the limit."""
    assert _depth_exceeds(text, limit) is _depth_exceeds_by_loop(text, limit)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"x": [{"b": {"c": 1, "c": 1}}]}',
        b'{"a\\"": 1, "a\\"": 2}',
        b'{"k:": "v:", "k:": 1}',
        b'[{}, {"a": {}}, {"a": {"z": 1}, "a": {}}]',
        b'{"pad": "' + b"x" * 1000 + b'", "a": {"b": 1, "b": 2}}',
    ],
)
def test_a_duplicate_key_is_refused_at_any_depth(body: bytes) -> None:
    """A key given twice in one object is refused by name (M_BAD_JSON), at any depth,
    with escaped quotes or colons in its strings, in a body dense with objects (issue 22:
    found by counting pairs) as in a sparse one (a Python call per object)."""
    with pytest.raises(BadJson, match="duplicate key") as info:
        parse_json_bytes(body)
    assert info.value.not_json is False


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a:": "b:", "c": {"a:": ":"}}', {"a:": "b:", "c": {"a:": ":"}}),
        (b'{"q\\"": "\\":", "r": ["\\\\", {"s": 1}]}', {'q"': '":', "r": ["\\", {"s": 1}]}),
        (b'[{"a": 1}, {"a": 1}]', [{"a": 1}, {"a": 1}]),
        (b'{"\\u00e9": 1, "\xc3\xa9x": 2}', {"\u00e9": 1, "\u00e9x": 2}),
    ],
)
def test_the_same_key_in_different_objects_or_colons_in_strings_are_no_duplicates(
    body: bytes, value: Any
) -> None:
    """Equal keys in different objects, colons and escaped quotes inside strings, and
    escaped and plain spellings of different keys parse as written."""
    assert parse_json_bytes(body) == value


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "' + b"[" * 200 + b'"}',
        b'{"a": "\\"' + b"{" * 200 + b'"}',
        b'{"a\\\\": ' + b"[" * 99 + b"]" * 99 + b"}",
        b"[" * 100 + b"]" * 100,
        b'[{"a": "]]]]"}' + b", []" * 300 + b"]",
    ],
)
def test_parse_json_bytes_counts_only_brackets_outside_strings(body: bytes) -> None:
    """The nesting limit (100) counts brackets outside strings only, escaped quotes
    included, and nesting, not the number of brackets (issue 22: the scan that replaced
    the per-character loop)."""
    parse_json_bytes(body)


@pytest.mark.parametrize(
    ("body", "not_json"),
    [
        (b'["\\"' + b"[" * 101, True),  # an unterminated string: its brackets do not count
        (b'[1, "a\\\\", ' + b"[" * 100 + b"]" * 100 + b"]", False),
        (b'{"a": "x"}' + b"{" * 101, False),
    ],
)
def test_parse_json_bytes_depth_around_strings(body: bytes, not_json: bool) -> None:
    """Brackets after a closed string count (an escaped backslash ends no string early),
    brackets inside an unterminated one do not: that body is not JSON."""
    with pytest.raises(BadJson) as info:
        parse_json_bytes(body)
    assert info.value.not_json is not_json


# ---- unpadded base64 (spec appendix "Unpadded Base64")


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
    ],
)
def test_unpadded_base64(raw: bytes, encoded: str) -> None:
    """The spec's examples encode unpadded and decode with or without padding."""
    assert encode_base64(raw) == encoded
    assert decode_base64(encoded) == raw
    assert decode_base64(encoded + "=" * (-len(encoded) % 4)) == raw


@pytest.mark.parametrize("text", ["Z", "Zm9v!", "Zm-v", "Zg==="])
def test_bad_base64(text: str) -> None:
    """Malformed base64 is refused."""
    with pytest.raises(InvalidBase64):
        decode_base64(text)


# ---- JSON signing (spec appendix "Cryptographic Test Vectors")


@pytest.mark.parametrize(("obj", "signature"), SPEC_SIGNATURES)
def test_spec_signing_vectors(obj: dict[str, Any], signature: str) -> None:
    """sign_json reproduces the spec's signatures for seed YJDBA9..., domain, ed25519:1."""
    signed = sign_json(obj, "domain", SPEC_KEY)
    assert signed == {**obj, "signatures": {"domain": {"ed25519:1": signature}}}
    verify_signed_json(signed, "domain", "ed25519:1", SPEC_KEY.key.verify_key)


@pytest.mark.parametrize(("obj", "signature"), SPEC_SIGNATURES)
def test_signedjson_agrees(obj: dict[str, Any], signature: str) -> None:
    """The signedjson package signs the vectors identically and verifies ours."""
    theirs = signedjson.key.decode_signing_key_base64(
        "ed25519", "1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
    )
    assert signedjson.sign.sign_json(dict(obj), "domain", theirs)["signatures"] == {
        "domain": {"ed25519:1": signature}
    }
    ours = sign_json(obj, "domain", SPEC_KEY)
    verify_key = signedjson.key.get_verify_key(theirs)
    signedjson.sign.verify_signed_json(ours, "domain", verify_key)


def test_signing_keeps_unsigned_and_other_signatures() -> None:
    """unsigned is not signed but kept; other servers' signatures are kept."""
    obj: dict[str, Any] = {
        "a": 1,
        "unsigned": {"age": 5},
        "signatures": {"other": {"ed25519:x": "sig"}},
    }
    signed = sign_json(obj, "domain", SPEC_KEY)
    assert signed["unsigned"] == {"age": 5}
    assert signed["signatures"]["other"] == {"ed25519:x": "sig"}
    plain = sign_json({"a": 1}, "domain", SPEC_KEY)
    assert signed["signatures"]["domain"] == plain["signatures"]["domain"]
    assert "domain" not in obj["signatures"]


@pytest.mark.parametrize("value", ["\ud800", 1.5, 2**53, {1: "x"}])
def test_sign_json_refuses_what_has_no_canonical_form(value: Any) -> None:
    """A lone surrogate, a float, an integer out of range or a non-string key is refused
    before anything is signed (issue 22: one walk and one encoding, the surrogate caught
    by the encoder)."""
    with pytest.raises(CanonicalJsonError):
        sign_json({"a": value}, "domain", SPEC_KEY)


def test_tampered_object_fails_verification() -> None:
    """Changing a signed field makes verification fail."""
    signed = sign_json({"one": 1}, "domain", SPEC_KEY)
    signed["one"] = 2
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signed_json(signed, "domain", "ed25519:1", SPEC_KEY.key.verify_key)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "no signatures"),
        ({"signatures": {"elsewhere": {}}}, "no signature by domain"),
        ({"signatures": {"domain": {"ed25519:1": "!!"}}}, "not valid base64"),
        ({"signatures": {"domain": {"ed25519:1": "AAAA"}}}, "wrong length"),
    ],
)
def test_missing_or_malformed_signatures(obj: dict[str, Any], message: str) -> None:
    """Missing, undecodable or short signatures fail with a reason."""
    with pytest.raises(SignatureError, match=message):
        verify_signed_json(obj, "domain", "ed25519:1", SPEC_KEY.key.verify_key)


# ---- Synapse's signing-key file


def test_key_file_round_trip() -> None:
    """A key written with to_line parses back to the same key."""
    key = ServerSigningKey.generate("a_Ab12")
    (parsed,) = parse_signing_key_file(key.to_line())
    assert (parsed.version, bytes(parsed.key)) == ("a_Ab12", bytes(key.key))


def test_key_file_matches_signedjson() -> None:
    """signedjson reads our key file line as the same key (Synapse's format)."""
    key = ServerSigningKey.generate("a_Ab12")
    (theirs,) = signedjson.key.read_signing_keys([key.to_line()])
    assert (theirs.version, bytes(theirs)) == ("a_Ab12", bytes(key.key))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("ed25519 a_1\n", "expected"),
        ("rsa a_1 AAAA\n", "unsupported algorithm"),
        ("ed25519 a-1 " + "A" * 43 + "\n", "key version"),
        ("ed25519 a_1 !!!!\n", "not valid base64"),
        ("ed25519 a_1 AAAA\n", "32 bytes"),
    ],
)
def test_bad_key_files(text: str, message: str) -> None:
    """Malformed signing-key files are refused with the reason."""
    with pytest.raises(InvalidKeyFile, match=message):
        parse_signing_key_file(text)


# ---- the libraries behind our entry points, and the parser as their gate (issue 11)


@pytest.mark.parametrize(
    "body",
    [b'["\\ud800"]', b'{"\\udc00": 1}', b'{"a": {"b": ["x\\udfff"]}}', b"1e400", b"[-1e400]"],
)
def test_parser_refuses_what_the_encoder_cannot_write(body: bytes) -> None:
    """A lone surrogate escape or a float overflowing to infinity is M_BAD_JSON at the
    parser (they passed it before, then made the canonical encoder raise)."""
    with pytest.raises(BadJson) as info:
        parse_json_bytes(body)
    assert info.value.not_json is False


def test_parser_keeps_surrogate_pairs_and_escaped_backslashes() -> None:
    """A surrogate pair escape is one character; an escaped backslash before "ud800" is text."""
    assert parse_json_bytes(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


def test_whatever_parses_encodes() -> None:
    """Everything the parser accepts encodes with canonicaljson without raising."""
    import canonicaljson

    for body in (b'{"a": "\\u00e9\\ud83d\\ude00", "b": [1, -2, null, true]}', b'"\\u0000"'):
        canonicaljson.encode_canonical_json(parse_json_bytes(body))


def test_encoder_is_canonicaljson() -> None:
    """encode_canonical_json gives canonicaljson's bytes."""
    import canonicaljson

    value = {"b": "é\u2028", "a": [1, {"z": None, "y": "\x00"}], "ä": True}
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


def test_url_safe_signature_accepted_as_synapse() -> None:
    """A signature written in URL-safe base64 verifies, as it does with signedjson and so
    in Synapse (our old code refused it)."""
    obj = sign_json({"a": 1, "b": "??>>"}, "domain", SPEC_KEY)
    sig = obj["signatures"]["domain"]["ed25519:1"]
    url_safe = sig.replace("+", "-").replace("/", "_")
    obj["signatures"]["domain"]["ed25519:1"] = url_safe
    verify_signed_json(obj, "domain", "ed25519:1", SPEC_KEY.key.verify_key)
    verify_key = signedjson.key.get_verify_key(SPEC_KEY.key)  # type: ignore[arg-type]
    signedjson.sign.verify_signed_json(obj, "domain", verify_key)


def test_url_safe_signature_with_both_alphabet_differences() -> None:
    """Signatures containing + and / (found by trying messages) verify in URL-safe form."""
    for i in range(200):
        obj = sign_json({"n": i}, "domain", SPEC_KEY)
        sig = obj["signatures"]["domain"]["ed25519:1"]
        if "+" in sig and "/" in sig:
            break
    else:
        pytest.fail("no signature with both + and / in 200 tries")
    obj["signatures"]["domain"]["ed25519:1"] = sig.replace("+", "-").replace("/", "_")
    verify_signed_json(obj, "domain", "ed25519:1", SPEC_KEY.key.verify_key)


def test_signing_key_named_for_signedjson() -> None:
    """A ServerSigningKey made from a plain nacl key carries signedjson's alg and version,
    so signedjson.sign signs with it under our key ID."""
    key = ServerSigningKey(version="v9", key=SigningKey(b"\x01" * 32))
    signed = signedjson.sign.sign_json({"x": 1}, "s", key.key)  # type: ignore[arg-type]
    assert list(signed["signatures"]["s"]) == ["ed25519:v9"]
    assert signed == sign_json({"x": 1}, "s", key)


_STRINGS = st.text(alphabet=st.sampled_from(['"', "\\", ".", "e", "E", "1", "a", "\n", "é"]))
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _STRINGS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_STRINGS, children, max_size=4)
    ),
    max_leaves=12,
)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


@given(
    _JSON_VALUES,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["a", 'a"b', "a\\b", "1.5e3"]),
    st.booleans(),
)
def test_holds_float_finds_exactly_the_floats_outside_strings(
    value: Any, number: float, key: str, with_float: bool
) -> None:
    """``holds_float`` of canonical JSON is true exactly when a float is among the values:
    with escapes in the strings (the match of each string) and without (the split at the
    quotes), whatever the strings hold (quotes, backslashes, dots, ``e``)."""
    whole = {key: number, "rest": value} if with_float else {key: value}
    encoded = json.dumps(whole, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert holds_float(encoded.encode("utf-8")) is _has_float(whole)


_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@given(_ANY_JSON)
def test_the_encoder_gives_canonicaljson_s_bytes_and_errors(value: Any) -> None:
    """The canonical encoder (the C encoder made with ``canonicaljson``'s settings, issue
    22) gives exactly ``canonicaljson.encode_canonical_json``'s bytes, and refuses what it
    refuses (NaN and infinities) with the same error, for any value, a bare string too."""
    try:
        expected: bytes | str = canonicaljson.encode_canonical_json(value)
    except ValueError as e:
        expected = str(e)
    try:
        got: bytes | str = encode_canonical_json(value, checked=True)
    except ValueError as e:
        got = str(e)
    assert got == expected


def test_the_encoder_refuses_what_json_cannot_hold_as_canonicaljson_does() -> None:
    """A set (not JSON) is a TypeError and a lone surrogate a CanonicalJsonError, as
    through ``canonicaljson``; a cycle is a ValueError, and the next encoding is whole."""
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_canonical_json({"a": {1}}, checked=True)
    with pytest.raises(CanonicalJsonError, match="lone surrogate"):
        encode_canonical_json({"a": "\ud800"}, checked=True)
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="Circular reference"):
        encode_canonical_json(cycle, checked=True)
    assert encode_canonical_json({"b": [1], "a": "é"}, checked=True) == '{"a":"é","b":[1]}'.encode()
