"""Server names, parsed by the grammar of the spec's appendix "Server Name".

::

    server_name = hostname [ ":" port ]
    port        = 1*5DIGIT
    hostname    = IPv4address / "[" IPv6address "]" / dns-name
    IPv6address = 2*45IPv6char      ; IPv6char = DIGIT / %x41-46 / %x61-66 / ":" / "."
    dns-name    = 1*255dns-char     ; dns-char = DIGIT / ALPHA / "-" / "."

Where the grammar leaves room we follow Synapse (``parse_and_validate_server_name``):
a dotted quad that is not a valid IPv4 address (``999.1.1.1``) is still a valid
dns-name, and an IPv6 literal must also be a valid address. Unlike the bare grammar we
reject port 0 and ports above 65535: no server can be reached there.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

#: Longest dns-name the grammar allows, in characters.
MAX_DNS_NAME_LENGTH = 255
#: The IPv6 literal's length bounds inside the brackets, in characters.
MIN_IPV6_LENGTH = 2
MAX_IPV6_LENGTH = 45
MAX_PORT = 65535

_DNS_NAME = re.compile(r"[A-Za-z0-9.\-]{1,255}\Z")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


class InvalidServerName(ValueError):
    """A string is not a server name by the spec's grammar; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class ServerName:
    """A parsed server name.

    ``host`` is as written, brackets included for IPv6 (``[::1]``); ``ip`` is set for
    IP literals; ``port`` is the explicit port or None.
    """

    host: str
    port: int | None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets: what to resolve, dial or check a certificate for."""
        if self.host.startswith("["):
            return self.host[1:-1]
        return self.host

    @property
    def is_ip_literal(self) -> bool:
        """True when the hostname is an IPv4 or IPv6 literal."""
        return self.ip is not None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_server_name(text: str) -> ServerName:
    """Parse and validate ``text`` as a server name, or raise :class:`InvalidServerName`."""
    if not isinstance(text, str) or not text:
        raise InvalidServerName("server name is empty")
    if not text.isascii():
        raise InvalidServerName(f"server name {text!r} has non-ASCII characters")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidServerName(f"server name {text!r} has an unclosed '['")
        host, rest = text[: end + 1], text[end + 1 :]
        literal = host[1:-1]
        if not _IPV6_CHARS.match(literal):
            raise InvalidServerName(f"server name {text!r}: {literal!r} is not an IPv6 address")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.IPv6Address(
                literal
            )
        except ValueError:
            raise InvalidServerName(
                f"server name {text!r}: {literal!r} is not an IPv6 address"
            ) from None
        if rest and not rest.startswith(":"):
            raise InvalidServerName(f"server name {text!r} has junk after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_part = text.partition(":")
        port_text = port_part if sep else None
        if not _DNS_NAME.match(host):
            raise InvalidServerName(
                f"server name {text!r}: hostname may hold only letters, digits, '-' and '.'"
                f" (at most {MAX_DNS_NAME_LENGTH} characters)"
            )
        ip = None
        if _IPV4.match(host):
            try:
                ip = ipaddress.IPv4Address(host)
            except ValueError:
                ip = None  # a dotted quad out of range is still a dns-name (as Synapse)
    port: int | None = None
    if port_text is not None:
        if not _PORT.match(port_text):
            raise InvalidServerName(f"server name {text!r}: port must be 1 to 5 digits")
        port = int(port_text)
        if not 0 < port <= MAX_PORT:
            raise InvalidServerName(f"server name {text!r}: port {port} is out of range")
    return ServerName(host=host, port=port, ip=ip)


def is_valid_server_name(text: str) -> bool:
    """True when ``text`` parses as a server name."""
    try:
        parse_server_name(text)
    except InvalidServerName:
        return False
    return True
