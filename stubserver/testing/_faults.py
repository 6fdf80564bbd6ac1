"""The control API's fault injection (``/_stubserver/v1/faults``) for :class:`Peer`.

:class:`PeerFaults` is the part of :class:`~stubserver.testing.Peer` that makes the peer
down, slow, lossy or failing, and reads what that did: it needs one thing from its
subclass, a call of the control API (:meth:`PeerFaults._call`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from stubserver.testing._feeds import PREFIX


class PeerFaults:
    """Fault injection over the control API, for :class:`Peer` (a plain base class).
    ``_prefix``: where its server's control routes start (one server of a process serving
    several has its own: ``/_stubserver/v1/servers/{name}``)."""

    _prefix: str = PREFIX

    @property
    def _faults_path(self) -> str:
        return f"{self._prefix}/faults"

    def _call(self, operation: str, method: str, path: str, body: Any = None) -> Any:
        """One call of the control API: its JSON answer; a refusal raises ControlError."""
        raise NotImplementedError

    def faults(self) -> dict[str, Any]:
        """``{"faults": {...}, "counters": {...}, "listening": bool}``: the faults set now,
        what they did since start-up (``connections_refused``, ``connections_closed``,
        ``requests_dropped``, ``requests_failed``, ``requests_delayed``), and whether the
        federation listeners listen."""
        answer: dict[str, Any] = self._call("faults", "GET", self._faults_path)
        return answer

    def fault_counters(self) -> dict[str, int]:
        """What the faults did since start-up (see :meth:`faults`)."""
        return dict(self.faults()["counters"])

    def set_faults(
        self,
        *,
        down: bool | str = False,
        latency_ms: int = 0,
        drop_share: float = 0.0,
        fail: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Replace the peer's faults (those not given: none); :meth:`faults`' answer once
        they hold (down: the listeners are closed).

        ``down``: True refuses connections (the federation listeners stop listening),
        ``"reset"`` resets each one as it is accepted (counted); ``latency_ms``: every
        federation request answered that much later; ``drop_share``: that share of
        requests reset without an answer; ``fail``: ``{"status": 400..599, "routes"?:
        [path globs], "share"?: 0..1, "errcode"?: "M_..."}``, answered on the paths the
        globs cover (all when left out); ``seed``: restart the share draws from it
        (deterministic tests).
        """
        body: dict[str, Any] = {"down": down, "latency_ms": latency_ms, "drop_share": drop_share}
        if fail is not None:
            body["fail"] = {k: list(v) if k == "routes" else v for k, v in fail.items()}
        if seed is not None:
            body["seed"] = seed
        answer: dict[str, Any] = self._call("set_faults", "PUT", self._faults_path, body)
        return answer

    def clear_faults(self) -> dict[str, Any]:
        """Clear every fault (the counters run on); :meth:`faults`' answer."""
        answer: dict[str, Any] = self._call("clear_faults", "DELETE", self._faults_path)
        return answer

    @contextmanager
    def down(self, how: bool | str = True) -> Iterator[dict[str, Any]]:
        """The peer down for the ``with`` block (``how``: True or ``"reset"``, as
        :meth:`set_faults`' ``down``), its other faults kept; they are put back as they
        were after it. Yields :meth:`faults`' answer once down."""
        before = self.faults()["faults"]
        answer: dict[str, Any] = self._call(
            "down", "PUT", self._faults_path, {**before, "down": how}
        )
        try:
            yield answer
        finally:
            self._call("up", "PUT", self._faults_path, before)
