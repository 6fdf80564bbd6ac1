"""The hints of ``stubserver check``: one per problem found, at the step where it was found,
each pointing at the fix. Pure functions of the facts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from stubserver.check.report import (
    STEP_CONNECTION,
    STEP_DNS,
    STEP_KEYS,
    STEP_ORDER,
    STEP_SERVER_NAME,
    STEP_WELL_KNOWN,
    CheckReport,
    FamilyWellKnown,
    Hint,
    families_disagree,
)
from stubserver.check.tester_fields import KeyChecks

# -- the signed request ----------------------------------------------------------------

HINT_URI_REWRITTEN = (
    "A reverse proxy in front of the server changes the request URI (it decodes or"
    " re-encodes percent-escapes, or rewrites the path), so the X-Matrix signature no longer"
    " matches. Pass the URI through untouched: in nginx write `proxy_pass"
    " http://127.0.0.1:8008;` with no path after the port (no trailing slash, no URI) and no"
    " `rewrite`; in Apache use `ProxyPass ... nocanon` and `AllowEncodedSlashes NoDecode`;"
    " in Caddy do not use `uri` or `rewrite` on /_matrix."
)
HINT_AUTH_STRIPPED = (
    "A reverse proxy in front of the server drops the Authorization header, so every"
    " federation request arrives unauthenticated (401). Forward it: nginx and Apache"
    ' forward it by default, so look for `proxy_set_header Authorization ""`,'
    " `RequestHeader unset Authorization` or an auth module on /_matrix."
)
HINT_CANNOT_FETCH_OUR_KEYS = (
    "The server could not fetch our signing keys to check the signature: it cannot reach"
    " other servers (see the way back)."
)
HINT_SIGNED_REQUEST_UNREACHABLE = (
    "The signed request did not get an answer: fix the connection problems above first."
)


# -- the way back ----------------------------------------------------------------------


def hint_way_back(server_name: str, our_name: str) -> str:
    """What to do when the server cannot fetch our keys."""
    return (
        f"{server_name} could not fetch the keys of {our_name}: it cannot resolve or reach"
        " other servers, so it cannot verify anyone's requests or join remote rooms. Check"
        " its outbound DNS (resolv.conf inside its container), its firewall's egress to ports"
        " 443 and 8448, any HTTP proxy settings, and ip_range_blocklist /"
        " federation_domain_whitelist. (If this checker's own identity is not reachable from"
        f" the internet, {our_name} is the one to fix.)"
    )


# -- .well-known ------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def hint_m_server(value: str) -> str:
    """The fix for an ``m.server`` that is not ``host[:port]``."""
    fixed = _SCHEME_RE.sub("", value).split("/", 1)[0]
    suggestion = f' ("m.server": "{fixed}")' if fixed and fixed != value else ""
    return (
        "m.server must be the delegated server name, host[:port], without a scheme, path or"
        f" trailing slash{suggestion}. Servers that read it ignore the whole .well-known"
        " otherwise, and look for the server at the server name itself."
    )


def describe_bad_m_server(value: object) -> str:
    """Why an ``m.server`` value is unusable (for ``result``)."""
    if not isinstance(value, str):
        return "m.server is not a string"
    if _SCHEME_RE.match(value):
        return f"m.server {json.dumps(value)} has a scheme; it must be host[:port]"
    if "/" in value:
        return f"m.server {json.dumps(value)} has a path; it must be host[:port]"
    return f"m.server {json.dumps(value)} is not a valid server name"


def hint_family(by_family: Mapping[str, FamilyWellKnown]) -> Hint | None:
    """A hint when the ``.well-known`` differs between addresses (often IPv4 vs IPv6)."""
    if not families_disagree(by_family):
        return None
    lines = []
    for family, fam in by_family.items():
        for address, attempt in fam.attempts.items():
            answer = f"m.server {attempt.server}" if attempt.server else attempt.result
            lines.append(f"{family} {address}: {answer}")
    return Hint(
        step=STEP_WELL_KNOWN,
        problem="the .well-known answers differently depending on the address: " + "; ".join(lines),
        fix="Every A and AAAA address of the server name must serve the same"
        " /.well-known/matrix/server over HTTPS on port 443: fix the listener (or the"
        " reverse proxy's `listen [::]:443`) of the failing family, or remove the DNS"
        " record that points at it.",
    )


# -- certificates -----------------------------------------------------------------------


def hint_certificate(
    expected_name: str,
    dns_names: Sequence[str] | None,
    *,
    server_name: str,
    delegated_name: str | None,
    srv_target: str | None,
    verify_error: str | None,
) -> str:
    """The fix for a certificate that does not verify for ``expected_name``."""
    names = ", ".join(dns_names or ()) or "no DNS name"
    covers_expected = expected_name.lower() in {n.lower() for n in dns_names or ()}
    if not covers_expected and dns_names is not None:
        for_what = f"the server name {server_name}"
        if delegated_name and delegated_name != server_name:
            for_what = f"the delegated name {delegated_name} (from .well-known)"
        advice = (
            f"The certificate is valid for {names}, but other servers check it against"
            f" {expected_name}: it must be valid for {for_what}."
        )
        target = (srv_target or "").rstrip(".")
        if target and target.lower() != expected_name.lower():
            advice += (
                f" The SRV target {target} does not count: since spec v1.2 the certificate is"
                " checked against the name SRV was looked up for, not the SRV target."
            )
        return advice
    detail = f" ({verify_error})" if verify_error else ""
    return (
        f"The certificate chain is not trusted{detail}: serve the full chain (the"
        " certificate followed by its intermediates, e.g. fullchain.pem) from a CA that"
        " other servers trust, and renew it before it expires."
    )


def hint_srv_cname(record_name: str, target: str, cname: str) -> Hint:
    """An SRV target that is a CNAME (RFC 2782 forbids it)."""
    return Hint(
        step=STEP_DNS,
        problem=f"the SRV record {record_name} points at {target}, which is a CNAME for {cname}",
        fix=f"An SRV target must not be an alias (RFC 2782): point the SRV record at {cname}"
        f" directly, or give {target.rstrip('.')} its own A/AAAA records.",
    )


def hint_unreachable(address: str, error: str, *, from_srv: str | None, server_name: str) -> Hint:
    """An address that did not answer (the usual 401-on-join cause)."""
    via = f" (from the SRV record {from_srv})" if from_srv else ""
    return Hint(
        step=STEP_CONNECTION,
        problem=f"{address}{via} did not answer: {error}",
        fix=(
            f"Other servers cannot reach {server_name} there, so they cannot fetch its keys"
            " or deliver to it, and its own requests to them fail with '401 Unauthorized'"
            " (typically when joining a room). Make the server (or its reverse proxy) listen"
            " on that address and port and open the firewall / port forwarding to it"
            + (
                ", or fix the SRV record to point at a host and port that answer."
                if from_srv
                else "; or fix the DNS record that points there."
            )
        ),
    )


def hint_keys(address: str, checks: KeyChecks, server_name: str, answered_for: object) -> Hint:
    """Key checks that failed (certificate aside)."""
    problems = []
    fixes = []
    if not checks.matching_server_name:
        problems.append(
            f"the keys are for {json.dumps(answered_for)}, not {json.dumps(server_name)}"
        )
        fixes.append(
            "server_name in the homeserver's config must be the name in user IDs, and the"
            " reverse proxy must route this host to that server"
        )
    if not checks.future_valid_until_ts:
        problems.append("valid_until_ts is in the past")
        fixes.append("check the server's clock")
    if not checks.has_ed25519_key:
        problems.append("no ed25519 verify key is published")
        fixes.append("check the signing key configuration")
    elif checks.all_ed25519_checks_ok is False:
        problems.append("a verify key's self-signature does not verify")
        fixes.append("the published key must be the one the server signs with")
    return Hint(
        step=STEP_KEYS,
        problem=f"{address}: " + "; ".join(problems),
        fix="; ".join(fixes).capitalize() + ".",
    )


def invalid_name_report(server_name: str, reason: str) -> CheckReport:
    """The report for a string that is not a server name (the tester's ``Error``)."""
    return CheckReport(
        server_name,
        error=f"Invalid server name '{server_name}'",
        hints=(
            Hint(
                STEP_SERVER_NAME,
                reason,
                "Give the server name as it appears in user IDs (@user:NAME): host[:port],"
                " without a scheme or path.",
            ),
        ),
    )


def order_hints(hints: Sequence[Hint]) -> tuple[Hint, ...]:
    """Hints by step, earliest failing step first; duplicates dropped, order kept."""
    seen: set[Hint] = set()
    unique = [h for h in hints if not (h in seen or seen.add(h))]  # type: ignore[func-returns-value]
    rank = {step: i for i, step in enumerate(STEP_ORDER)}
    return tuple(sorted(unique, key=lambda h: rank.get(h.step, len(STEP_ORDER))))
