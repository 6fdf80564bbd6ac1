"""The X-Matrix header: building, signing and parsing (spec: "Request Authentication")."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from stubserver.auth.xmatrix import (
    MAX_AUTHORIZATION_HEADER_BYTES,
    MAX_AUTHORIZATION_HEADERS,
    AuthenticationFailed,
    MalformedAuthorization,
    MissingAuthorization,
    XMatrixCredentials,
    format_authorization_header,
    parse_authorization_header,
    request_signing_object,
    select_authorization,
    sign_request,
)
from stubserver.signing.keys import ServerSigningKey, verify_signed_json

KEY = ServerSigningKey(version="a_1", key=SigningKey(b"\x01" * 32))
SIG = "c2lnbmF0dXJl"


def creds(
    origin: str = "origin.test", destination: str | None = "dest.test", key: str = "ed25519:a_1"
) -> XMatrixCredentials:
    return XMatrixCredentials(origin=origin, key_id=key, signature=SIG, destination=destination)


class SigningObjectTests(SynchronousTestCase):
    def test_without_content_has_no_content_key(self) -> None:
        """A request without a body signs method, uri, origin and destination only."""
        assert (request_signing_object("GET", "/_matrix/x?a=b", "o.test", "d.test")) == {
            "method": "GET",
            "uri": "/_matrix/x?a=b",
            "origin": "o.test",
            "destination": "d.test",
        }

    def test_with_content(self) -> None:
        """A request with a body signs the parsed body under ``content``."""
        obj = request_signing_object("PUT", "/p", "o.test", "d.test", {"a": 1})
        assert obj["content"] == {"a": 1}

    def test_empty_object_content_is_kept(self) -> None:
        """An empty JSON object body is still content (only None means no body)."""
        assert (request_signing_object("POST", "/p", "o", "d", {})["content"]) == {}


class FormatTests(SynchronousTestCase):
    def test_spec_example_shape(self) -> None:
        """The header is written exactly as the spec's example: quoted, lower-case, no spaces."""
        assert format_authorization_header(creds()) == (
            b'X-Matrix origin="origin.test",destination="dest.test",key="ed25519:a_1",'
            b'sig="c2lnbmF0dXJl"'
        )

    def test_sign_request_signature_verifies(self) -> None:
        """The signature in a signed request's header verifies over the spec's object."""
        header = sign_request(
            "POST",
            "/_matrix/f?x=1",
            origin="o.test",
            destination="d.test",
            key=KEY,
            content={"k": "v"},
        )
        parsed = parse_authorization_header(header)
        obj = request_signing_object("POST", "/_matrix/f?x=1", "o.test", "d.test", {"k": "v"})
        obj["signatures"] = {"o.test": {parsed.key_id: parsed.signature}}
        verify_signed_json(obj, "o.test", KEY.key_id, KEY.key.verify_key)
        assert (parsed.origin, parsed.destination) == ("o.test", "d.test")


# Real-world and grammar-edge headers that must parse: (header, origin, destination, key, sig)
GOOD = [
    # Synapse / the spec's example
    (
        b'X-Matrix origin="o.test",destination="d.test",key="ed25519:k",sig="AB+/cd"',
        "o.test",
        "d.test",
        "ed25519:k",
        "AB+/cd",
    ),
    # older servers: no destination, unquoted values with colons
    (b"X-Matrix origin=o.test,key=ed25519:k,sig=ABcd", "o.test", None, "ed25519:k", "ABcd"),
    (b"X-Matrix origin=o.test:8448,key=ed25519:k,sig=x", "o.test:8448", None, "ed25519:k", "x"),
    # names case-insensitive, order free, spaces and tabs around commas and '='
    (b'x-matrix  SIG="s" ,\tKey = "ed25519:k" , Origin="o.test"', "o.test", None, "ed25519:k", "s"),
    # backslash escapes are unescaped
    (b'X-Matrix origin="o\\.test",key="ed25519:k",sig="a\\b"', "o.test", None, "ed25519:k", "ab"),
    # unknown parameters are ignored; empty list elements are allowed
    (
        b'X-Matrix ,origin="o.test",,foo="bar baz",key="ed25519:k",sig="s",',
        "o.test",
        None,
        "ed25519:k",
        "s",
    ),
    # IP literals
    (b'X-Matrix origin="[::1]:8448",key="ed25519:k",sig="s"', "[::1]:8448", None, "ed25519:k", "s"),
    (b'X-Matrix origin="127.0.0.1",key="ed25519:k",sig="s"', "127.0.0.1", None, "ed25519:k", "s"),
]

# Headers that must be rejected as malformed (400): (header, words in the message)
BAD = [
    (b'X-Matrix origin="a.test",origin="b.test",key="ed25519:k",sig="s"', "twice"),
    (b'X-Matrix origin="a.test",ORIGIN="a.test",key="ed25519:k",sig="s"', "twice"),
    (b'X-Matrix key="ed25519:k",sig="s"', "'origin' parameter is missing"),
    (b'X-Matrix origin="a.test",sig="s"', "'key' parameter is missing"),
    (b'X-Matrix origin="a.test",key="ed25519:k"', "'sig' parameter is missing"),
    (b'X-Matrix origin="",key="ed25519:k",sig="s"', "'origin' parameter is empty"),
    (b'X-Matrix origin="a.test",key="ed25519:k",sig=""', "'sig' parameter is empty"),
    (b'X-Matrix origin="a.test",destination="",key="ed25519:k",sig="s"', "empty"),
    (b'X-Matrix origin="a b",key="ed25519:k",sig="s"', "not a valid server name"),
    (b'X-Matrix origin="[::1",key="ed25519:k",sig="s"', "not a valid server name"),
    (b'X-Matrix origin="' + b"a" * 256 + b'",key="ed25519:k",sig="s"', "server name"),
    (b'X-Matrix origin="a.test",destination="d d",key="ed25519:k",sig="s"', "destination"),
    (b'X-Matrix origin="a.test",key="nocolon",sig="s"', "not a key ID"),
    (b'X-Matrix origin="a\xff.test",key="ed25519:k",sig="s"', "not UTF-8"),
    (
        b'X-Matrix origin="a.test",key="ed25519:k",sig="s'
        + b"a" * MAX_AUTHORIZATION_HEADER_BYTES
        + b'"',
        "longer than",
    ),
    (b'X-Matrix origin="a.test,key="ed25519:k",sig="s"', "expected ','"),
    (b'X-Matrix origin="a.test",key="ed25519:k",sig="unterminated', "quoted"),
    (b"X-Matrix origin=a b,key=ed25519:k,sig=s", "expected ','"),
    (b"X-Matrix origin=,key=ed25519:k,sig=s", "no value"),
    (b"X-Matrix origin", "no '=value'"),
    (b"X-Matrix", "no parameters"),
    (b"X-Matrix =x", "parameter name"),
    (b'X-Matrix origin="a.test\x01",key="ed25519:k",sig="s"', "quoted"),
]


class ParseTests(SynchronousTestCase):
    def test_good_headers(self) -> None:
        """Each well-formed header in the table parses to its origin, destination, key and sig."""
        for header, origin, destination, key, sig in GOOD:
            with self.subTest(header=header):
                parsed = parse_authorization_header(header)
                assert (parsed.origin, parsed.destination, parsed.key_id, parsed.signature) == (
                    origin,
                    destination,
                    key,
                    sig,
                )

    def test_bad_headers(self) -> None:
        """Each malformed header in the table is a 400 MalformedAuthorization saying why."""
        for header, words in BAD:
            with self.subTest(header=header[:80]):
                with pytest.raises(MalformedAuthorization) as info:
                    parse_authorization_header(header)
                e = info.value
                assert (e.status, e.errcode) == (400, "M_UNAUTHORIZED")
                assert words in e.message


class SelectTests(SynchronousTestCase):
    def test_no_headers_is_missing(self) -> None:
        """No Authorization header at all is a 401 MissingAuthorization."""
        with pytest.raises(MissingAuthorization) as info:
            select_authorization([])
        e = info.value
        assert e.status == 401

    def test_other_schemes_ignored(self) -> None:
        """Headers of another scheme are ignored; only they present means missing."""
        with pytest.raises(MissingAuthorization):
            select_authorization([b"Bearer abc"])
        auth = select_authorization([b"Bearer abc", format_authorization_header(creds())])
        assert auth.origin == "origin.test"

    def test_last_origin_wins_with_its_signatures(self) -> None:
        """The last X-Matrix header's origin wins; signatures of its headers are collected."""
        auth = select_authorization(
            [
                format_authorization_header(creds(origin="b.test", key="ed25519:one")),
                format_authorization_header(creds(origin="a.test", key="ed25519:x")),
                format_authorization_header(creds(origin="b.test", key="ed25519:two")),
            ]
        )
        assert auth.origin == "b.test"
        assert dict(auth.signatures) == {"ed25519:one": SIG, "ed25519:two": SIG}

    def test_every_destination_reported(self) -> None:
        """Every destination given is reported, so that each can be checked."""
        auth = select_authorization(
            [
                format_authorization_header(creds(destination="x.test")),
                format_authorization_header(creds(destination=None)),
            ]
        )
        assert auth.destinations == ("x.test",)

    def test_any_malformed_rejects(self) -> None:
        """One malformed X-Matrix header among good ones rejects the request."""
        with pytest.raises(MalformedAuthorization):
            select_authorization([format_authorization_header(creds()), b"X-Matrix origin=broken"])

    def test_too_many_headers(self) -> None:
        """More than MAX_AUTHORIZATION_HEADERS headers is malformed."""
        with pytest.raises(MalformedAuthorization):
            select_authorization(
                [format_authorization_header(creds())] * (MAX_AUTHORIZATION_HEADERS + 1)
            )


_labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=20)
server_names = st.builds(
    lambda labels, port: ".".join(labels) + ("" if port is None else f":{port}"),
    st.lists(_labels, min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
)
key_ids = st.builds(
    lambda v: f"ed25519:{v}",
    st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=10),
)
signatures = st.text(alphabet=string.ascii_letters + string.digits + "+/", min_size=1, max_size=90)


class PropertyTests(SynchronousTestCase):
    @given(server_names, st.one_of(st.none(), server_names), key_ids, signatures)
    def test_round_trip(self, origin: str, destination: str | None, key_id: str, sig: str) -> None:
        """Any header we build parses back to the same credentials."""
        c = XMatrixCredentials(origin=origin, key_id=key_id, signature=sig, destination=destination)
        assert parse_authorization_header(format_authorization_header(c)) == c

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_only_typed_errors(self, data: bytes) -> None:
        """Arbitrary bytes after the scheme either parse or raise AuthenticationFailed."""
        try:
            parsed = parse_authorization_header(b"X-Matrix " + data)
        except AuthenticationFailed as e:
            assert e.status == 400
        else:
            assert parsed.origin

    @given(st.text(max_size=300))
    def test_arbitrary_text_only_typed_errors(self, text: str) -> None:
        """Arbitrary text headers either select credentials or raise AuthenticationFailed."""
        try:
            auth = select_authorization([text.encode("utf-8", "surrogatepass")])
        except AuthenticationFailed as e:
            assert e.status in (400, 401)
        else:
            assert auth.signatures
