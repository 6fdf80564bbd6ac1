"""Outbound signed federation requests (spec: Server-Server API, "Request Authentication").

:class:`FederationClient` signs each request with our key (an ``Authorization: X-Matrix``
header built by :mod:`stubserver.auth.xmatrix`) and sends it through an ``IAgent`` for
``matrix-federation://`` URIs (``stubserver.outbound.agent.MatrixFederationAgent``: resolution,
blocklist and verified TLS happen there). The response body is read up to
:data:`MAX_RESPONSE_BODY_BYTES`, and the whole exchange has a deadline of
:data:`REQUEST_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from stubserver import __version__
from stubserver.auth.xmatrix import sign_request
from stubserver.client.body import BodyTooLarge, describe_failure, read_body_limited
from stubserver.signing.canonical_json import encode_json
from stubserver.signing.keys import ServerSigningKey

#: Largest response body we read, in bytes.
MAX_RESPONSE_BODY_BYTES = 4 * 1024 * 1024
#: Deadline for one request: resolution, connection, sending and reading the body, in
#: seconds (Synapse's default federation request timeout).
REQUEST_TIMEOUT_SECONDS = 60
USER_AGENT = f"stubserver/{__version__}".encode("ascii")
SCHEME = "matrix-federation"


class FederationRequestFailed(Exception):
    """A signed request got no complete response; ``str()`` says why.

    ``temporary`` says whether trying again later may help.
    """

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class ResponseTooLarge(FederationRequestFailed):
    """The response body exceeded :data:`MAX_RESPONSE_BODY_BYTES`."""


class RequestTimedOut(FederationRequestFailed):
    """No complete response within the deadline."""


@dataclass(frozen=True)
class FederationIdentity:
    """Who we are when we sign: our server name and signing key."""

    server_name: str
    signing_key: ServerSigningKey

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Our key IDs (what a notary asked for our keys should return)."""
        return (self.signing_key.key_id,)


@dataclass(frozen=True)
class FederationResponse:
    """A response: status code, headers and the whole body."""

    status: int
    headers: Headers
    body: bytes


@implementer(IBodyProducer)
class BytesProducer:
    """An ``IBodyProducer`` for a body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the whole body at once."""
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: everything was written."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


def check_path_and_query(path_and_query: str) -> None:
    """Raise ValueError unless ``path_and_query`` is an ASCII request-target starting with '/'.

    It is signed and sent exactly as given, so it must already be percent-encoded.
    """
    if not path_and_query.startswith("/"):
        raise ValueError(f"the path must start with '/': {path_and_query[:100]!r}")
    if not path_and_query.isascii() or any(c in path_and_query for c in " \t\r\n#"):
        raise ValueError(
            "the path must be percent-encoded ASCII without spaces or '#':"
            f" {path_and_query[:100]!r}"
        )


class FederationClient:
    """Sends requests signed as ``identity`` through ``agent`` (module docstring).

    ``timeout_seconds`` and ``max_body_bytes`` default to :data:`REQUEST_TIMEOUT_SECONDS` and
    :data:`MAX_RESPONSE_BODY_BYTES`; ``check`` passes its tighter probe limits.
    """

    def __init__(
        self,
        agent: IAgent,
        identity: FederationIdentity,
        clock: IReactorTime,
        *,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
        max_body_bytes: int = MAX_RESPONSE_BODY_BYTES,
    ) -> None:
        self._agent = agent
        self._identity = identity
        self._clock = clock
        self._timeout_seconds = timeout_seconds
        self._max_body_bytes = max_body_bytes

    def request(
        self,
        method: str,
        destination: str,
        path_and_query: str,
        content: Any = None,
    ) -> Deferred[FederationResponse]:
        """Sign and send one request; ``content`` (a JSON value) is sent as the body.

        Fails with :class:`FederationRequestFailed` (or a subclass) when no complete
        response arrives; ValueError for a path that cannot be sent as given.
        """
        check_path_and_query(path_and_query)
        d = Deferred.fromCoroutine(self._request(method, destination, path_and_query, content))

        def timed_out(result: Any, timeout: float) -> Any:
            # Called whenever our deadline cancelled the request, whatever the cancellation
            # turned into on the way up (CancelledError, or a connector error when the
            # deadline struck mid-connect): the user learns it timed out, not how.
            if isinstance(result, Failure):
                raise RequestTimedOut(
                    f"no complete response from {destination} within {timeout:g} s",
                    temporary=True,
                )
            return result

        d.addTimeout(self._timeout_seconds, self._clock, onTimeoutCancel=timed_out)
        return d

    async def _request(
        self, method: str, destination: str, path_and_query: str, content: Any
    ) -> FederationResponse:
        identity = self._identity
        authorization = sign_request(
            method,
            path_and_query,
            origin=identity.server_name,
            destination=destination,
            key=identity.signing_key,
            content=content,
        )
        headers = Headers({b"Authorization": [authorization], b"User-Agent": [USER_AGENT]})
        producer = None
        if content is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
            producer = BytesProducer(encode_json(content))
        uri = f"{SCHEME}://{destination}{path_and_query}".encode("ascii")
        try:
            response = await self._agent.request(method.encode("ascii"), uri, headers, producer)
            body = await read_body_limited(response, self._max_body_bytes)
        except CancelledError:
            raise
        except BodyTooLarge:
            raise ResponseTooLarge(
                f"the response from {destination} is larger than {self._max_body_bytes} bytes",
                temporary=False,
            ) from None
        except FederationRequestFailed:
            raise
        except Exception as e:
            text, temporary = describe_failure(e)
            raise FederationRequestFailed(text, temporary=temporary) from e
        return FederationResponse(status=response.code, headers=response.headers, body=body)
