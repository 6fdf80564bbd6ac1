"""The ``X-Matrix`` request authentication scheme, as pure functions.

Spec: Server-Server API, "Authentication" / "Request Authentication". The sender signs::

    {"method": ..., "uri": <path and query exactly as sent>, "origin": ..., "destination": ...,
     "content": <parsed body, only when there is one>}

and sends ``Authorization: X-Matrix origin="…",destination="…",key="ed25519:…",sig="…"``.

The header is parsed by the grammar the spec points at (RFC 9110 section 11, ``credentials``)::

    credentials   = auth-scheme [ 1*SP #auth-param ]
    auth-param    = token BWS "=" BWS ( token / quoted-string )
    quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    #rule         = [ element ] *( OWS "," OWS [ element ] )

with the spec's allowances: parameter names are case-insensitive, unknown parameters are
ignored, and a colon is accepted in an unquoted value (older servers send
``key=ed25519:abc``). We also refuse what a correct sender never produces and what would
make the outcome ambiguous: a repeated parameter, an empty value, an origin or destination
that is not a server name, bytes that are not UTF-8, an oversized header.

Where the spec is silent we follow Synapse (``synapse/federation/transport/server/_base.py``):

- A malformed X-Matrix header answers ``400 M_UNAUTHORIZED``; a missing one ``401``.
- With several ``Authorization`` headers, those with another scheme are ignored; every
  X-Matrix header must parse and every ``destination`` given must be ours; the *last*
  header's origin is the origin, and the signatures of every header from that origin are
  checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.canonical_json import JsonDict
from stubserver.signing.keys import ServerSigningKey, sign_json

#: The auth-scheme name (compared case-insensitively, RFC 9110 section 11.1).
SCHEME = "X-Matrix"
#: Longest Authorization header value we parse, in bytes. Four server names of at most
#: 255 characters plus a key ID and a signature fit in well under this.
MAX_AUTHORIZATION_HEADER_BYTES = 4096
#: Most Authorization headers we look at on one request.
MAX_AUTHORIZATION_HEADERS = 8
#: Most auth-params we accept in one header (the spec defines four).
MAX_AUTH_PARAMS = 16
#: The Matrix error code for every authentication failure (as Synapse).
M_UNAUTHORIZED = "M_UNAUTHORIZED"

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN_RE = re.compile(f"{_TCHAR}+")
# An unquoted value: a token, plus ':' for compatibility with older servers (spec).
_BARE_VALUE_RE = re.compile(f"(?:{_TCHAR}|:)+")
_OWS_RE = re.compile(r"[ \t]*")
# qdtext / quoted-pair, with obs-text as any non-ASCII character (the header is decoded as
# UTF-8 first). Control characters other than HTAB are excluded.
_QUOTED_RE = re.compile(
    r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\t \x21-\x7e\x80-\U0010ffff])*)"'
)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_]+:[A-Za-z0-9_]+\Z")


class AuthenticationFailed(Exception):
    """A request failed authentication.

    ``status`` and ``errcode`` are what to answer; ``message`` says, for an admin, exactly
    what failed. Subclasses name the kind of failure.
    """

    status: int = HTTPStatus.UNAUTHORIZED
    errcode: str = M_UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingAuthorization(AuthenticationFailed):
    """The request carries no X-Matrix Authorization header (401)."""


class MalformedAuthorization(AuthenticationFailed):
    """An X-Matrix Authorization header does not parse (400, as Synapse)."""

    status = HTTPStatus.BAD_REQUEST


@dataclass(frozen=True)
class XMatrixCredentials:
    """One parsed X-Matrix header: who signed, for whom, with which key, and the signature."""

    origin: str
    key_id: str
    signature: str
    destination: str | None


@dataclass(frozen=True)
class XMatrixAuthorization:
    """What a request's X-Matrix headers claim, combined by Synapse's rule.

    ``signatures`` maps key ID to signature for every header from ``origin``;
    ``destinations`` lists every ``destination`` parameter given (each must be ours).
    """

    origin: str
    signatures: Mapping[str, str]
    destinations: tuple[str, ...]


def request_signing_object(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> JsonDict:
    """The JSON object a request's signature covers (spec: "Request Authentication", step 1).

    ``uri`` is the path and query exactly as sent on the request line. ``content`` is the
    parsed JSON body; the key is absent when the request has no body.
    """
    obj: JsonDict = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_authorization_header(credentials: XMatrixCredentials) -> bytes:
    """The Authorization header value for ``credentials``, as the spec's example writes it.

    Lower-case names, one space after the scheme, every value quoted (backslash and quote
    escaped, though valid server names, key IDs and base64 never contain them).
    """
    params = [f"origin={_quote(credentials.origin)}"]
    if credentials.destination is not None:
        params.append(f"destination={_quote(credentials.destination)}")
    params.append(f"key={_quote(credentials.key_id)}")
    params.append(f"sig={_quote(credentials.signature)}")
    return f"{SCHEME} {','.join(params)}".encode()


def sign_request(
    method: str,
    uri: str,
    *,
    origin: str,
    destination: str,
    key: ServerSigningKey,
    content: Any = None,
) -> bytes:
    """Sign a request and return its ``Authorization`` header value."""
    signed = sign_json(
        request_signing_object(method, uri, origin, destination, content), origin, key
    )
    signature = signed["signatures"][origin][key.key_id]
    return format_authorization_header(
        XMatrixCredentials(
            origin=origin, key_id=key.key_id, signature=signature, destination=destination
        )
    )


def is_xmatrix(header: bytes) -> bool:
    """True when an Authorization header value uses the X-Matrix scheme (any case)."""
    scheme = header.split(b" ", 1)[0].split(b"\t", 1)[0]
    return scheme.lower() == SCHEME.lower().encode("ascii")


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse a comma-separated auth-param list; names lower-cased, values unescaped.

    Raises :class:`MalformedAuthorization` on a syntax error or a repeated name.
    """
    params: dict[str, str] = {}
    pos = 0
    end = len(text)
    while True:
        pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < end and text[pos] == ",":  # an empty list element is allowed
            pos += 1
            continue
        if pos >= end:
            break
        name_match = _TOKEN_RE.match(text, pos)
        if name_match is None:
            raise MalformedAuthorization(
                "Malformed Authorization header: expected a parameter name at"
                f" {text[pos : pos + 20]!r}"
            )
        name = name_match.group().lower()
        pos = _OWS_RE.match(text, name_match.end()).end()  # type: ignore[union-attr]
        if pos >= end or text[pos] != "=":
            raise MalformedAuthorization(
                f"Malformed Authorization header: parameter {name!r} has no '=value'"
            )
        pos = _OWS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos < end and text[pos] == '"':
            quoted = _QUOTED_RE.match(text, pos)
            if quoted is None:
                raise MalformedAuthorization(
                    f"Malformed Authorization header: parameter {name!r} has an unterminated"
                    " or invalid quoted value"
                )
            value = _UNESCAPE_RE.sub(lambda m: m.group(1), quoted.group(1))
            pos = quoted.end()
        else:
            bare = _BARE_VALUE_RE.match(text, pos)
            if bare is None:
                raise MalformedAuthorization(
                    f"Malformed Authorization header: parameter {name!r} has no value"
                    " (or a value that must be quoted)"
                )
            value = bare.group()
            pos = bare.end()
        if name in params:
            raise MalformedAuthorization(
                f"Malformed Authorization header: parameter {name!r} is given twice"
            )
        params[name] = value
        if len(params) > MAX_AUTH_PARAMS:
            raise MalformedAuthorization(
                f"Malformed Authorization header: more than {MAX_AUTH_PARAMS} parameters"
            )
        pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < end and text[pos] != ",":
            raise MalformedAuthorization(
                f"Malformed Authorization header: expected ',' after parameter {name!r}"
            )
    return params


def _server_name_param(params: Mapping[str, str], name: str) -> str:
    value = params[name]
    if len(value.encode("utf-8")) > 255 + 1 + 5:
        raise MalformedAuthorization(
            f"Malformed Authorization header: {name} is longer than a server name can be"
        )
    try:
        parse_server_name(value)
    except InvalidServerName as e:
        raise MalformedAuthorization(
            f"Malformed Authorization header: {name} is not a valid server name: {e}"
        ) from None
    return value


def parse_authorization_header(header: bytes) -> XMatrixCredentials:
    """Parse one X-Matrix Authorization header value.

    Raises :class:`MalformedAuthorization` (400) naming what is wrong.
    """
    if len(header) > MAX_AUTHORIZATION_HEADER_BYTES:
        raise MalformedAuthorization(
            f"Malformed Authorization header: longer than {MAX_AUTHORIZATION_HEADER_BYTES} bytes"
        )
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedAuthorization("Malformed Authorization header: not UTF-8") from None
    scheme, sep, rest = text.partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise MalformedAuthorization(f"Malformed Authorization header: the scheme is not {SCHEME}")
    if not sep:
        raise MalformedAuthorization("Malformed Authorization header: no parameters")
    params = parse_auth_params(rest.lstrip(" "))
    for required in ("origin", "key", "sig"):
        if required not in params:
            raise MalformedAuthorization(
                f"Malformed Authorization header: the {required!r} parameter is missing"
            )
    for name in ("origin", "destination", "key", "sig"):
        if params.get(name) == "":
            raise MalformedAuthorization(
                f"Malformed Authorization header: the {name!r} parameter is empty"
            )
    origin = _server_name_param(params, "origin")
    destination = _server_name_param(params, "destination") if "destination" in params else None
    key_id = params["key"]
    if not _KEY_ID_RE.match(key_id):
        raise MalformedAuthorization(
            f"Malformed Authorization header: key {key_id[:80]!r} is not a key ID"
            " ('<algorithm>:<version>')"
        )
    return XMatrixCredentials(
        origin=origin, key_id=key_id, signature=params["sig"], destination=destination
    )


def select_authorization(headers: Iterable[bytes]) -> XMatrixAuthorization:
    """Combine a request's Authorization header values by Synapse's rule (module docstring).

    Raises :class:`MissingAuthorization` when none is X-Matrix, and
    :class:`MalformedAuthorization` when any X-Matrix one does not parse or there are
    more than :data:`MAX_AUTHORIZATION_HEADERS`.
    """
    values: Sequence[bytes] = list(headers)
    if len(values) > MAX_AUTHORIZATION_HEADERS:
        raise MalformedAuthorization(
            f"Malformed Authorization header: more than {MAX_AUTHORIZATION_HEADERS} headers"
        )
    parsed = [parse_authorization_header(v) for v in values if is_xmatrix(v)]
    if not parsed:
        raise MissingAuthorization("Missing Authorization headers (no X-Matrix credentials)")
    origin = parsed[-1].origin
    signatures: dict[str, str] = {}
    for creds in parsed:
        if creds.origin == origin:
            signatures[creds.key_id] = creds.signature
    return XMatrixAuthorization(
        origin=origin,
        signatures=signatures,
        destinations=tuple(c.destination for c in parsed if c.destination is not None),
    )
