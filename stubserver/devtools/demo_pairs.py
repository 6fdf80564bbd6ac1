"""The demo's pair matrix: every server of the trio sends a signed request to every other,
and the receiver's request log must show it authenticated; the matrix prints the path
each pair took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stubserver.outbound.build import FederationContext
    from stubserver.outbound.signed_request import FederationClient

from stubserver.devtools.demo_world import POLL_INTERVAL_SECONDS, TRIO, DemoServer
from stubserver.reactor import IReactor

# -- the pair matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class PairResult:
    """What one server saw of another: the path its resolution took, and the outcome."""

    source: str
    destination: str
    path: str  # e.g. "well-known → beta-fed.demo:8449"
    ok: bool
    failed_step: str | None = None  # "resolve", "keys", "signed request" or "receiver log"
    error: str | None = None


def describe_path(source: str, host: str, port: int) -> str:
    """The resolution path as shown in the matrix: ``<how> → <host>:<port>``."""
    how = {
        "ip_literal": "IP literal",
        "explicit_port": "explicit port",
        "srv": "SRV",
        "legacy_srv": "legacy SRV",
        "default_port": "direct",
    }.get(source, source)
    return f"{how} → {host}:{port}"


def format_matrix(servers: Sequence[DemoServer], results: Sequence[PairResult]) -> str:
    """The compact matrix: one row per sender, one line per receiver, OK or the failing step."""
    width = max(len(s.server_name) for s in servers)
    width_path = max((len(r.path) for r in results), default=0)
    lines = []
    for r in results:
        verdict = "OK" if r.ok else f"FAIL at {r.failed_step}: {r.error}"
        lines.append(
            f"{r.source:<{width}} → {r.destination:<{width}}  {r.path:<{width_path}}  {verdict}"
        )
    return "\n".join(lines)


#: How long to wait for the receiver's request log to show a request, in seconds.
LOG_WAIT_SECONDS = 3.0


def _path_of(resolution: Any, connected: Any) -> str:
    """The matrix's path text for the target used (or the first one resolved)."""
    target = connected or (resolution.targets[0] if resolution.targets else None)
    if target is None:
        return "unresolved"
    if resolution.delegated_server_name is None:
        return describe_path(target.source, target.host, target.port)
    hop = f"{target.host}:{target.port}"
    if target.source in ("srv", "legacy_srv"):
        return f"well-known → {describe_path(target.source, target.host, target.port)}"
    return f"well-known → {hop}"


def _log_shows(log_path: Path, origin: str, uri: str) -> dict[str, Any] | None:
    try:
        lines = log_path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("origin") == origin and entry.get("uri") == uri:
            return entry if isinstance(entry, dict) else None
    return None


async def check_pair(
    reactor: IReactor,
    source: DemoServer,
    destination: DemoServer,
    *,
    run_dir: Path,
    context: FederationContext,
    client: FederationClient,
) -> PairResult:
    """Resolve, fetch keys of, and send a signed profile query from ``source`` to ``destination``.

    Then read ``destination``'s request log for the request, authenticated with ``source``
    as origin: proof that the receiver resolved the sender and verified its keys.
    """
    from twisted.internet.defer import Deferred  # noqa: PLC0415
    from twisted.internet.task import deferLater  # noqa: PLC0415

    src, dst = source.server_name, destination.server_name

    def fail(step: str, path: str, error: str) -> PairResult:
        return PairResult(src, dst, path, ok=False, failed_step=step, error=error)

    resolution = await context.resolver.resolve(dst)
    if not resolution.ok:
        return fail("resolve", "unresolved", str(resolution.error))
    path = _path_of(resolution, None)
    try:
        await context.key_fetcher.fetch(dst)
    except Exception as e:  # any failure is this step's verdict
        return fail("keys", path, str(e))
    uri = f"/_matrix/federation/v1/query/profile?user_id=%40alice%3A{dst}"
    try:
        response = await client.request("GET", dst, uri)
    except Exception as e:
        return fail("signed request", path, str(e))
    path = _path_of(resolution, context.agent.connected_target(dst))
    if response.status != 200:
        return fail("signed request", path, f"HTTP {response.status}: {response.body[:200]!r}")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    log_path = run_dir / f"{destination.slug}.requests.jsonl"
    while (entry := _log_shows(log_path, src, uri)) is None and time.monotonic() < deadline:
        d: Deferred[None] = deferLater(reactor, POLL_INTERVAL_SECONDS, lambda: None)
        await d
    if entry is None:
        return fail("receiver log", path, f"{dst}'s request log has no request from {src}")
    if entry.get("authenticated") is not True:
        return fail(
            "receiver log", path, f"{dst} did not authenticate {src}: {entry.get('auth_error')}"
        )
    return PairResult(src, dst, path, ok=True)


async def check_all_pairs(
    reactor: IReactor, run_dir: Path, servers: Sequence[DemoServer] = TRIO
) -> list[PairResult]:
    """Every ordered pair, each sender with its own config, agent and identity."""
    from twisted.internet.defer import Deferred, gatherResults  # noqa: PLC0415

    from stubserver.config import load_config  # noqa: PLC0415
    from stubserver.outbound.build import build_federation_client  # noqa: PLC0415
    from stubserver.outbound.signed_request import FederationClient, FederationIdentity  # noqa: PLC0415

    pending: list[Deferred[PairResult]] = []
    for s in servers:
        config = load_config(run_dir / f"{s.slug}.yaml")
        context = build_federation_client(reactor, config.federation)
        client = FederationClient(
            context.agent, FederationIdentity(config.server_name, config.signing_key), reactor
        )
        for d in servers:
            if d is not s:
                pending.append(
                    Deferred.fromCoroutine(
                        check_pair(reactor, s, d, run_dir=run_dir, context=context, client=client)
                    )
                )
    results: list[PairResult] = await gatherResults(pending, consumeErrors=True)
    return results
