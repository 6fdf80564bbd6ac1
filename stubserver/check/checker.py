"""``stubserver check``: the asynchronous check. :class:`FederationChecker` fetches the facts
(resolution, ``.well-known`` over every address, DNS, each address's keys, the version, the
signed request and the way back) and calls the pure decisions of
:mod:`~stubserver.check.verdicts` and :mod:`~stubserver.check.hints` to build the
:class:`~stubserver.check.report.CheckReport` (the report's sections for ``.well-known``,
DNS and the version are built in :mod:`~stubserver.check.well_known_section`,
:mod:`~stubserver.check.dns_section` and :mod:`~stubserver.check.version_section`).

The signed probes (the signed request and the way back) are
:mod:`~stubserver.check.signed_probes`; every probe of one address goes through
:class:`~stubserver.check.prober.AddressProber`, which refuses blocked addresses before
dialling (and is retried once by :func:`~stubserver.check.prober.probe_with_retry`).
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
    json_or_none,
    probe_with_retry,
)
from stubserver.check.report import (
    STEP_CERTIFICATE,
    STEP_SIGNED_REQUEST,
    STEP_WAY_BACK,
    CheckReport,
    CheckWarning,
    ClientReport,
    FamilyWellKnown,
    Hint,
    SignedRequestReport,
    WayBackReport,
)
from stubserver.check.signed_probes import check_signed_request, check_way_back
from stubserver.check.tester_fields import ConnectionReport, join_host_port
from stubserver.check.verdicts import (
    check_keys,
)
from stubserver.check.version_section import probe_version, version_report
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
from stubserver.client.blocklist import BlockedAddress
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients, build_dns_clients
from stubserver.discovery.resolution import SOURCE_LEGACY_SRV, SOURCE_SRV, Resolution, Target
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.outbound.build import build_federation_client
from stubserver.outbound.signed_request import (
    FederationClient,
    FederationIdentity,
)
from stubserver.reactor import IReactor

#: "This host" in every spelling (0.0.0.0/8 and the IPv6 unspecified address; their
#: IPv4-mapped, -compatible and 6to4 forms follow from the blocklist's expansion). Dialling
#: them reaches services on our own host, so a report never does, whatever the configured
#: ``ip_range_blocklist`` (Synapse blocks them always); ``ip_range_allowlist`` still wins.
THIS_HOST_RANGES = ("0.0.0.0/8", "::/128")

MS_PER_SECOND = 1000

KEY_PATH = "/_matrix/key/v2/server"


class Resolver(Protocol):
    """Server name resolution (the :class:`~stubserver.discovery.resolution.FederationResolver`)."""

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        """The resolution; never fails."""


def with_this_host_blocked(settings: FederationSettings) -> FederationSettings:
    """``settings`` with :data:`THIS_HOST_RANGES` added to its ``ip_range_blocklist``."""
    missing = tuple(r for r in THIS_HOST_RANGES if r not in settings.ip_range_blocklist)
    if not missing:
        return settings
    return replace(settings, ip_range_blocklist=settings.ip_range_blocklist + missing)


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
        reactor: IReactor,
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
        version = version_report(
            dns.addrs or (), facts.version_names, facts.version_errors, facts.errors
        )
        differ = versions_differ(facts.versions)
        if differ is not None:
            facts.warnings.append(differ)
        way_back = WayBackReport(skipped=True, ok=False)
        signed = SignedRequestReport(skipped=True, ok=False)
        if self._identity is not None and self._client is not None:
            way_back = await check_way_back(
                self._client, server_name, self._identity, self._now_ms()
            )
            facts.go_on()
            if way_back.failed:
                facts.hints.append(Hint(STEP_WAY_BACK, way_back.error or "", way_back.hint or ""))
            signed = await check_signed_request(self._client, server_name, self._identity)
            facts.go_on()
            if signed.failed:
                facts.hints.append(Hint(STEP_SIGNED_REQUEST, signed.error or "", signed.hint or ""))
        client: ClientReport | None = None
        if self._client_checks:
            client = await check_client(
                self._prober,
                self._dns.addresses,
                self._blocklist,
                name,
                https_port=self._settings.well_known_port,
            )
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
        keys = json_or_none(probe.body)
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
        await probe_version(
            self._prober,
            target,
            address,
            joined,
            versions=facts.versions,
            version_names=facts.version_names,
            version_errors=facts.version_errors,
            warnings=facts.warnings,
        )
        keys = json_or_none(probe.body)
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
