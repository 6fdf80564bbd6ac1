"""The signed probes of ``stubserver check``, through the full resolution and the client of
``stubserver request`` (:class:`~stubserver.outbound.signed_request.FederationClient`):

* the signed request (the report's ``SignedRequest``): does the server accept a request
  signed by us, with its URI byte for byte as signed;
* the way back (``WayBack``): can the server reach us, asked through its notary for our
  own keys.

The verdicts on the answers are pure (:mod:`~stubserver.check.verdicts`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError

from stubserver.check.hints import HINT_SIGNED_REQUEST_UNREACHABLE
from stubserver.check.prober import json_or_none
from stubserver.check.report import SignedRequestReport, WayBackReport
from stubserver.check.verdicts import (
    NOTARY_QUERY_PATH,
    judge_signed_response,
    judge_way_back,
    notary_query,
)
from stubserver.client.body import describe_failure
from stubserver.discovery.unreachable import ResolutionFailed
from stubserver.outbound.signed_request import (
    FederationClient,
    FederationIdentity,
    FederationRequestFailed,
    RequestTimedOut,
)

#: The signed requests. The first needs authentication on Synapse (``/query/{queryType}``)
#: and on stubserver, so a stripped Authorization header shows as 401. The second has
#: percent-escapes in its *path* (the ``@`` and ``:`` of a user ID) on a path Synapse
#: routes (``/user/devices/{userId}``): a proxy that decodes or re-encodes the URI turns
#: them into ``@`` and ``:`` and the signature, made over the URI as sent, fails.
SIGNED_REQUEST_PATHS = (
    "/_matrix/federation/v1/query/profile?user_id=%40stubserver-check%3A{origin}&field=displayname",
    "/_matrix/federation/v1/user/devices/%40stubserver-check%3A{origin}",
)


async def signed_json_request(
    client: FederationClient, server_name: str, method: str, path: str, content: Any = None
) -> tuple[int, Any]:
    """A request signed with our identity, sent by the same client as ``stubserver
    request``; ``(status, parsed JSON or None)``."""
    response = await client.request(method, server_name, path, content)
    return response.status, json_or_none(response.body)


async def check_signed_request(
    client: FederationClient, server_name: str, identity: FederationIdentity
) -> SignedRequestReport:
    """The report's ``SignedRequest``: each of :data:`SIGNED_REQUEST_PATHS`, signed, through
    the full resolution; the first refused ends it."""
    verdict = SignedRequestReport(skipped=True, ok=False)
    for template in SIGNED_REQUEST_PATHS:
        path = template.format(origin=identity.server_name)
        try:
            status, body = await signed_json_request(client, server_name, "GET", path)
        except CancelledError:
            raise
        except Exception as e:
            return SignedRequestReport(
                skipped=False,
                ok=False,
                error=f"no answer: {describe_no_answer(e)}",
                hint=HINT_SIGNED_REQUEST_UNREACHABLE,
            )
        verdict = judge_signed_response(status, body)
        if not verdict.ok:
            return SignedRequestReport(
                skipped=False,
                ok=False,
                status=verdict.status,
                error=f"GET {path}: {verdict.error}",
                hint=verdict.hint,
            )
    return verdict


async def check_way_back(
    client: FederationClient, server_name: str, identity: FederationIdentity, now_ms: int
) -> WayBackReport:
    """The report's ``WayBack``: ask ``server_name``'s notary for our own keys (so it must
    reach us), signed, through the full resolution."""
    try:
        status, body = await signed_json_request(
            client,
            server_name,
            "POST",
            NOTARY_QUERY_PATH,
            notary_query(identity, now_ms),
        )
    except CancelledError:
        raise
    except Exception as e:
        return WayBackReport(
            skipped=False,
            ok=False,
            error=f"no answer from the notary: {describe_no_answer(e)}",
            hint=HINT_SIGNED_REQUEST_UNREACHABLE,
        )
    return judge_way_back(server_name, identity.server_name, identity.key_ids, status, body)


def describe_no_answer(e: BaseException) -> str:
    """One line for a person on why a request through the full resolution got no answer."""
    if isinstance(e, FederationRequestFailed) and e.__cause__ is not None:
        e = e.__cause__  # the signed-request client's wrapping: describe the reason itself
    if isinstance(e, ResolutionFailed):
        return str(e.resolution.error)
    if isinstance(e, RequestTimedOut):
        return "timed out"
    return describe_failure(e)[0]
