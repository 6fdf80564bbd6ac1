"""``stubserver check``: the asynchronous check. :class:`FederationChecker` fetches the facts
(resolution, ``.well-known`` over every address, DNS, each address's keys, the version, the
signed request and the way back) and calls the pure decisions of
:mod:`~stubserver.check.verdicts` and :mod:`~stubserver.check.hints` to build the
:class:`~stubserver.check.report.CheckReport` (the report's sections for ``.well-known`` and
DNS are built in :mod:`~stubserver.check.well_known_section` and
:mod:`~stubserver.check.dns_section`).

The signed probes (the signed request and the way back) go through
:class:`~stubserver.client.signed_request.FederationClient`, the client of ``stubserver
request``; every probe of one address goes through :class:`~stubserver.check.prober.AddressProber`,
which refuses blocked addresses before dialling.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, gatherResults

from stubserver.check.client_section import check_client
from stubserver.check.dns_section import dns_report
from stubserver.check.hints import (
    HINT_SIGNED_REQUEST_UNREACHABLE,
    hint_certificate,
    hint_keys,
    hint_unreachable,
    invalid_name_report,
    order_hints,
)
from stubserver.check.prober import (
    MAX_PROBE_BODY_BYTES,
    PROBE_TIMEOUT_SECONDS,
    AddressProber,
    ProbeFailed,
    Prober,
    ProbeResult,
)
from stubserver.check.report import (
    STEP_CERTIFICATE,
    STEP_SIGNED_REQUEST,
    STEP_WAY_BACK,
    CheckReport,
    CheckWarning,
    ClientReport,
    ConnectionReport,
    FamilyWellKnown,
    Hint,
    SignedRequestReport,
    VersionReport,
    WayBackReport,
    join_host_port,
)
from stubserver.check.verdicts import (
    NOTARY_QUERY_PATH,
    check_keys,
    judge_signed_response,
    judge_way_back,
    notary_query,
)
from stubserver.check.warning_rules import (
    connection_retried,
    key_valid_too_long,
    not_json_content_type,
    old_tls,
    split_brain,
    versions_differ,
    well_known_unusable,
)
from stubserver.check.well_known_section import well_known_by_family, well_known_report
from stubserver.client.agent import ResolutionFailed
from stubserver.client.blocklist import BlockedAddress
from stubserver.client.body import describe_failure
from stubserver.client.build import build_federation_client
from stubserver.client.signed_request import (
    FederationClient,
    FederationIdentity,
    FederationRequestFailed,
    RequestTimedOut,
)
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients, build_dns_clients
from stubserver.discovery.resolution import SOURCE_LEGACY_SRV, SOURCE_SRV, Resolution, Target
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

#: "This host" in every spelling (0.0.0.0/8 and the IPv6 unspecified address; their
#: IPv4-mapped, -compatible and 6to4 forms follow from the blocklist's expansion). Dialling
#: them reaches services on our own host, so a report never does, whatever the configured
#: ``ip_range_blocklist`` (Synapse blocks them always); ``ip_range_allowlist`` still wins.
THIS_HOST_RANGES = ("0.0.0.0/8", "::/128")

MS_PER_SECOND = 1000

#: The signed requests. The first needs authentication on Synapse (``/query/{queryType}``)
#: and on stubserver, so a stripped Authorization header shows as 401. The second has
#: percent-escapes in its *path* (the ``@`` and ``:`` of a user ID) on a path Synapse
#: routes (``/user/devices/{userId}``): a proxy that decodes or re-encodes the URI turns
#: them into ``@`` and ``:`` and the signature, made over the URI as sent, fails.
SIGNED_REQUEST_PATHS = (
    "/_matrix/federation/v1/query/profile?user_id=%40stubserver-check%3A{origin}&field=displayname",
    "/_matrix/federation/v1/user/devices/%40stubserver-check%3A{origin}",
)
KEY_PATH = "/_matrix/key/v2/server"
VERSION_PATH = "/_matrix/federation/v1/version"
#: Attempts per connection before its failure is final: one retry, as a federating server
#: retries, so that a single dropped connection is a warning, not a failure.
ATTEMPTS_PER_CONNECTION = 2


class Resolver(Protocol):
    """Server name resolution (the :class:`~stubserver.discovery.resolution.FederationResolver`)."""

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        """The resolution; never fails."""


async def probe_with_retry(
    prober: Prober,
    address: str,
    port: int,
    *,
    tls_server_name: str,
    host_header: str,
    path: str,
    blocked: bool = False,
) -> tuple[ProbeResult, str | None]:
    """Probe once, and once more when the first attempt got no answer.

    Returns the answer and the first attempt's error when only the retry worked; raises the
    last ProbeFailed when every attempt failed. A ``blocked`` address is never retried
    (nothing was dialled: the same refusal would come again).
    """
    first_error: str | None = None
    for attempt in range(1 if blocked else ATTEMPTS_PER_CONNECTION):
        try:
            result = await prober.probe(
                address, port, tls_server_name=tls_server_name, host_header=host_header, path=path
            )
        except ProbeFailed as e:
            if attempt + 1 >= (1 if blocked else ATTEMPTS_PER_CONNECTION):
                raise
            first_error = str(e)
            continue
        return result, first_error
    raise AssertionError("unreachable")  # pragma: no cover


def with_this_host_blocked(settings: FederationSettings) -> FederationSettings:
    """``settings`` with :data:`THIS_HOST_RANGES` added to its ``ip_range_blocklist``."""
    missing = tuple(r for r in THIS_HOST_RANGES if r not in settings.ip_range_blocklist)
    if not missing:
        return settings
    return replace(settings, ip_range_blocklist=settings.ip_range_blocklist + missing)


def _json_or_none(body: bytes) -> Any:
    try:
        return parse_json_bytes(body)
    except BadJson:
        return None


@dataclass
class _Facts:
    """What the check gathered so far (mutable while gathering; frozen into the report)."""

    hints: list[Hint] = field(default_factory=list)
    warnings: list[CheckWarning] = field(default_factory=list)
    #: ``ip:port`` -> the version that connection answered ("name version"), or its error.
    versions: dict[str, str] = field(default_factory=dict)
    version_errors: dict[str, str] = field(default_factory=dict)
    version_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    reports: dict[str, ConnectionReport] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: Set when the check was cancelled: no further step starts.
    stopped: bool = False

    def go_on(self) -> None:
        """Raise CancelledError when the check was cancelled (called between steps)."""
        if self.stopped:
            raise CancelledError()


class FederationChecker:
    """Runs ``check`` against one server name (see the module docstring).

    Everything outbound goes through the settings' IP blocklist: the report endpoint makes
    requests for whoever asks and must not become a way into private networks.
    """

    def __init__(
        self,
        reactor: Any,
        settings: FederationSettings,
        identity: FederationIdentity | None = None,
        *,
        rng: random.Random | None = None,
        dns: DnsClients | None = None,
        prober: Prober | None = None,
        resolver: Resolver | None = None,
        client: bool = False,
    ) -> None:
        self._reactor = reactor
        settings = with_this_host_blocked(settings)
        self._settings = settings
        self._identity = identity
        self._dns = dns if dns is not None else build_dns_clients(reactor, settings.dns_servers)
        self._context = build_federation_client(reactor, settings, rng=rng, dns=self._dns)
        self._blocklist = self._context.blocklist
        self._prober: Prober = (
            prober
            if prober is not None
            else AddressProber(reactor, settings.ca_files, self._context.blocklist)
        )
        self._resolver: Resolver = resolver if resolver is not None else self._context.resolver
        self._client_checks = client
        # The signed probes (the signed request and the way back) go through the client of
        # ``stubserver request``, with the probe's tighter limits.
        self._client = (
            None
            if identity is None
            else FederationClient(
                self._context.agent,
                identity,
                reactor,
                timeout_seconds=PROBE_TIMEOUT_SECONDS,
                max_body_bytes=MAX_PROBE_BODY_BYTES,
            )
        )

    def check(self, server_name: str) -> Deferred[CheckReport]:
        """The report for ``server_name``; never fails (problems are in the report).

        Cancelling it fails it with CancelledError at once and stops the work: the step
        under way is cancelled, and no further step starts, even where the step turned the
        cancellation into an ordinary failure (a cancelled connect is
        ``ConnectingCancelledError``, which a step reports as "no answer" and goes on).
        """
        facts = _Facts()
        work = Deferred.fromCoroutine(self._check(server_name, facts))

        def cancel(_: Deferred[CheckReport]) -> None:
            facts.stopped = True
            work.cancel()

        answer: Deferred[CheckReport] = Deferred(cancel)

        def done(result: Any) -> None:
            if not answer.called:
                answer.callback(result)  # a Failure errbacks

        work.addBoth(done)
        return answer

    def _now_ms(self) -> int:
        return int(self._reactor.seconds() * MS_PER_SECOND)

    async def _check(self, server_name: str, facts: _Facts) -> CheckReport:
        try:
            name = parse_server_name(server_name)
        except InvalidServerName as e:
            return invalid_name_report(server_name, str(e))
        resolution = await self._resolver.resolve(server_name)
        facts.go_on()
        by_family: dict[str, FamilyWellKnown] = {}
        if resolution.well_known is not None:
            by_family = await well_known_by_family(
                self._dns.addresses,
                self._prober,
                name.host,
                self._settings.well_known_port,
                verify_certificates=self._settings.verify_certificates,
            )
            facts.go_on()
            followed = await self._follow_answers(server_name, resolution, by_family)
            facts.go_on()
            brain = split_brain(by_family, followed)
            if brain is not None:
                facts.warnings.append(brain)
        # The hint of an unusable .well-known joins the hints only when federation fails:
        # then it may be the cause; otherwise the warning says it.
        wk_hints: list[Hint] = []
        well_known, wk_invalid = well_known_report(
            resolution, by_family, wk_hints, self._reactor.seconds()
        )
        unusable = well_known_unusable(resolution.well_known, _bad_m_server(by_family))
        if unusable is not None:
            facts.warnings.append(unusable)
        dns = await dns_report(
            self._dns.srv, resolution, facts.hints, facts.go_on, warnings=facts.warnings
        )
        facts.go_on()
        await self._probe_targets(server_name, resolution, facts)
        facts.go_on()
        version = self._version(dns.addrs or (), facts)
        differ = versions_differ(facts.versions)
        if differ is not None:
            facts.warnings.append(differ)
        way_back = WayBackReport(skipped=True, ok=False)
        signed = SignedRequestReport(skipped=True, ok=False)
        if self._identity is not None and self._client is not None:
            way_back = await self._way_back(server_name, self._identity, self._client)
            facts.go_on()
            if way_back.failed:
                facts.hints.append(Hint(STEP_WAY_BACK, way_back.error or "", way_back.hint or ""))
            signed = await self._signed_request(server_name, self._identity, self._client)
            facts.go_on()
            if signed.failed:
                facts.hints.append(Hint(STEP_SIGNED_REQUEST, signed.error or "", signed.hint or ""))
        client: ClientReport | None = None
        if self._client_checks:
            client = await check_client(self._prober, self._dns.addresses, self._blocklist, name)
            facts.go_on()
        report = CheckReport(
            server_name,
            well_known=well_known,
            well_known_invalid=wk_invalid,
            dns=dns,
            connection_reports=facts.reports,
            connection_errors=facts.errors,
            version=version,
            signed_request=signed,
            way_back=way_back,
            well_known_by_family=by_family,
            hints=order_hints(facts.hints),
            warnings=_unique(facts.warnings),
            client=client,
        )
        if wk_hints and not report.federation_ok:
            report = replace(report, hints=order_hints([*facts.hints, *wk_hints]))
        return report

    async def _follow_answers(
        self, server_name: str, resolution: Resolution, by_family: dict[str, FamilyWellKnown]
    ) -> dict[str, str]:
        """Where each ``m.server`` served by some address leads, when the addresses differ:
        the delegated name is resolved and its first address asked for its keys."""
        answers = {
            a.server for fam in by_family.values() for a in fam.attempts.values() if a.server
        }
        if len(answers) + (1 if resolution.delegated_server_name is None else 0) < 2:
            return {}
        followed: dict[str, str] = {}
        for answer in sorted(answers):
            followed[answer] = await self._lead(server_name, answer)
        return followed

    async def _lead(self, server_name: str, delegated: str) -> str:
        """Where one delegated name leads, for a person."""
        resolution = await self._resolver.resolve(delegated)
        target = next((t for t in resolution.targets if t.addresses), None)
        if target is None:
            return f"no address: {resolution.error or 'nothing found'}"
        joined = join_host_port(target.addresses[0], target.port)
        try:
            probe, _ = await probe_with_retry(
                self._prober,
                target.addresses[0],
                target.port,
                tls_server_name=target.tls_server_name,
                host_header=target.host_header,
                path=KEY_PATH,
                blocked=self._blocklist.is_blocked(target.addresses[0]),
            )
        except ProbeFailed as e:
            return f"{joined}, which did not answer: {e}"
        keys = _json_or_none(probe.body)
        answered = keys.get("server_name") if isinstance(keys, dict) else None
        if answered == server_name:
            return f"{joined}, which serves the keys of {server_name}"
        return f"{joined}, which answered {probe.status} without the keys of {server_name}"

    # -- connections ---------------------------------------------------------------------

    async def _probe_targets(self, server_name: str, resolution: Resolution, facts: _Facts) -> None:
        jobs: list[Deferred[None]] = []
        seen: set[str] = set()
        srv_name = next((lk.name for lk in resolution.srv_lookups if lk.found), None)
        for target in resolution.targets:
            lookup = next((lk for lk in resolution.address_lookups if lk.host == target.host), None)
            for address in lookup.blocked if lookup else ():
                joined = join_host_port(address, target.port)
                facts.errors[joined] = str(BlockedAddress(address, target.host))
            for address in target.addresses:
                joined = join_host_port(address, target.port)
                if joined in seen:
                    continue
                seen.add(joined)
                from_srv = srv_name if target.source in (SOURCE_SRV, SOURCE_LEGACY_SRV) else None
                jobs.append(
                    Deferred.fromCoroutine(
                        self._probe_one(
                            server_name, resolution, target, address, from_srv=from_srv, facts=facts
                        )
                    )
                )
        await gatherResults(jobs)
        for joined, error in facts.errors.items():
            target_host = next(
                (t.host for t in resolution.targets if joined.endswith(f":{t.port}")), None
            )
            from_srv = next(
                (
                    srv_name
                    for t in resolution.targets
                    if t.host == target_host and t.source in (SOURCE_SRV, SOURCE_LEGACY_SRV)
                ),
                None,
            )
            facts.hints.append(
                hint_unreachable(joined, error, from_srv=from_srv, server_name=server_name)
            )

    async def _probe_one(
        self,
        server_name: str,
        resolution: Resolution,
        target: Target,
        address: str,
        *,
        from_srv: str | None,
        facts: _Facts,
    ) -> None:
        joined = join_host_port(address, target.port)
        try:
            probe, first_error = await probe_with_retry(
                self._prober,
                address,
                target.port,
                tls_server_name=target.tls_server_name,
                host_header=target.host_header,
                path=KEY_PATH,
                blocked=self._blocklist.is_blocked(address),
            )
        except ProbeFailed as e:
            facts.errors[joined] = str(e)
            return
        if first_error is not None:
            facts.warnings.append(connection_retried(joined, first_error))
        await self._version_at(target, address, joined, facts)
        keys = _json_or_none(probe.body)
        if probe.status != 200 or not isinstance(keys, dict):
            facts.errors[joined] = f"GET {KEY_PATH} answered {probe.status}" + (
                "" if isinstance(keys, dict) else " without a JSON object"
            )
            return
        for warning in (
            not_json_content_type(joined, KEY_PATH, probe.headers.getRawHeaders(b"content-type")),
            key_valid_too_long(joined, keys, self._now_ms()),
            old_tls(joined, probe.tls_version),
        ):
            if warning is not None:
                facts.warnings.append(warning)
        cert_errors = probe.certificate_errors if self._settings.verify_certificates else ()
        checks, verify_keys = check_keys(
            server_name, self._now_ms(), keys, valid_certificates=not cert_errors
        )
        facts.reports[joined] = ConnectionReport(
            certificates=probe.certificates,
            cipher_version=probe.tls_version,
            cipher_suite=probe.cipher_suite,
            checks=checks,
            errors=cert_errors,
            ed25519_verify_keys=verify_keys,
            keys=keys,
        )
        if cert_errors:
            leaf = probe.certificates[0] if probe.certificates else None
            facts.hints.append(
                Hint(
                    STEP_CERTIFICATE,
                    f"{joined}: " + "; ".join(cert_errors),
                    hint_certificate(
                        target.tls_server_name,
                        leaf.dns_names if leaf else None,
                        server_name=server_name,
                        delegated_name=resolution.delegated_server_name,
                        srv_target=target.host if from_srv else None,
                        verify_error="; ".join(probe.verify_errors) or None,
                    ),
                )
            )
        key_problem = not (
            checks.matching_server_name
            and checks.future_valid_until_ts
            and checks.has_ed25519_key
            and checks.all_ed25519_checks_ok
        )
        if key_problem:
            facts.hints.append(hint_keys(joined, checks, server_name, keys.get("server_name")))

    # -- through the full resolution -------------------------------------------------------

    @staticmethod
    async def _signed(
        client: FederationClient, server_name: str, method: str, path: str, content: Any = None
    ) -> tuple[int, Any]:
        """A request signed with our identity, sent by the same client as ``stubserver
        request``; ``(status, parsed JSON or None)``."""
        response = await client.request(method, server_name, path, content)
        return response.status, _json_or_none(response.body)

    async def _version_at(self, target: Target, address: str, joined: str, facts: _Facts) -> None:
        """Ask one connection for the version (every connection is asked: a proxy sending
        some requests to another backend shows as different versions)."""
        try:
            probe, first_error = await probe_with_retry(
                self._prober,
                address,
                target.port,
                tls_server_name=target.tls_server_name,
                host_header=target.host_header,
                path=VERSION_PATH,
            )
        except ProbeFailed as e:
            facts.version_errors[joined] = str(e)
            return
        if first_error is not None:
            facts.warnings.append(connection_retried(joined, first_error))
        body = _json_or_none(probe.body)
        server = body.get("server") if isinstance(body, dict) else None
        if probe.status != 200 or not isinstance(server, dict):
            facts.version_errors[joined] = f"GET {VERSION_PATH} answered {probe.status}"
            return
        content_type = not_json_content_type(
            joined, VERSION_PATH, probe.headers.getRawHeaders(b"content-type")
        )
        if content_type is not None:
            facts.warnings.append(content_type)
        name, version = str(server.get("name", "")), str(server.get("version", ""))
        facts.versions[joined] = f"{name} {version}".strip()
        facts.version_names[joined] = (name, version)

    @staticmethod
    def _version(addresses: Sequence[str], facts: _Facts) -> VersionReport:
        """``Version``: the first connection's answer (in the order of ``DNSResult.Addrs``),
        else the first error."""
        for joined in addresses:
            if joined in facts.version_names:
                name, version = facts.version_names[joined]
                return VersionReport(name=name, version=version)
        for joined in addresses:
            if joined in facts.version_errors:
                return VersionReport(error=facts.version_errors[joined])
        for joined in addresses:
            if joined in facts.errors:
                return VersionReport(error=facts.errors[joined])
        return VersionReport(error="no address answered")

    async def _signed_request(
        self, server_name: str, identity: FederationIdentity, client: FederationClient
    ) -> SignedRequestReport:
        verdict = SignedRequestReport(skipped=True, ok=False)
        for template in SIGNED_REQUEST_PATHS:
            path = template.format(origin=identity.server_name)
            try:
                status, body = await self._signed(client, server_name, "GET", path)
            except CancelledError:
                raise
            except Exception as e:
                return SignedRequestReport(
                    skipped=False,
                    ok=False,
                    error=f"no answer: {_describe(e)}",
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

    async def _way_back(
        self, server_name: str, identity: FederationIdentity, client: FederationClient
    ) -> WayBackReport:
        try:
            status, body = await self._signed(
                client,
                server_name,
                "POST",
                NOTARY_QUERY_PATH,
                notary_query(identity, self._now_ms()),
            )
        except CancelledError:
            raise
        except Exception as e:
            return WayBackReport(
                skipped=False,
                ok=False,
                error=f"no answer from the notary: {_describe(e)}",
                hint=HINT_SIGNED_REQUEST_UNREACHABLE,
            )
        return judge_way_back(server_name, identity.server_name, identity.key_ids, status, body)


def _bad_m_server(by_family: dict[str, FamilyWellKnown]) -> object:
    """The unusable ``m.server`` some address served with a 200, if any."""
    return next(
        (
            a.bad_m_server
            for fam in by_family.values()
            for a in fam.attempts.values()
            if a.status == 200 and a.result
        ),
        None,
    )


def _unique(warnings: Sequence[CheckWarning]) -> tuple[CheckWarning, ...]:
    """The warnings without duplicates, in the order found."""
    return tuple(dict.fromkeys(warnings))


def _describe(e: BaseException) -> str:
    """One line for a person on why a request through the full resolution got no answer."""
    if isinstance(e, FederationRequestFailed) and e.__cause__ is not None:
        e = e.__cause__  # the signed-request client's wrapping: describe the reason itself
    if isinstance(e, ResolutionFailed):
        return str(e.resolution.error)
    if isinstance(e, RequestTimedOut):
        return "timed out"
    return describe_failure(e)[0]
