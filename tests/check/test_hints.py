"""The hints of ``check`` and the text report that opens with them."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.hints import (
    describe_bad_m_server,
    hint_certificate,
    hint_family,
    hint_m_server,
    order_hints,
)
from stubserver.check.render import render_text
from stubserver.check.report import (
    STEP_CONNECTION,
    STEP_DNS,
    STEP_KEYS,
    STEP_WELL_KNOWN,
    CheckReport,
    FamilyWellKnown,
    Hint,
    WellKnownAttempt,
)


class HintTests(SynchronousTestCase):
    """Every failure comes with a hint pointing at the fix."""

    def test_m_server_table(self) -> None:
        """A scheme, a path or junk in m.server is named, and the fix shows the right value."""
        cases = [
            ("https://matrix.example.org", "scheme", '"m.server": "matrix.example.org"'),
            ("https://matrix.example.org:443/", "scheme", '"m.server": "matrix.example.org:443"'),
            ("matrix.example.org/", "path", '"m.server": "matrix.example.org"'),
        ]
        for value, problem, fix in cases:
            assert problem in describe_bad_m_server(value)
            assert fix in hint_m_server(value)
        assert "not a string" in describe_bad_m_server(42)

    def test_certificate_for_srv_target(self) -> None:
        """A certificate for the SRV target is named as such and the right name is given."""
        text = hint_certificate(
            "example.org",
            ["matrix.example.org"],
            server_name="example.org",
            delegated_name=None,
            srv_target="matrix.example.org.",
            verify_error=None,
        )
        assert "must be valid for the server name example.org" in text
        assert "SRV target matrix.example.org does not count" in text

    def test_certificate_for_delegated_name(self) -> None:
        """With delegation the certificate must be for the delegated name."""
        text = hint_certificate(
            "fed.example.org",
            ["example.org"],
            server_name="example.org",
            delegated_name="fed.example.org",
            srv_target=None,
            verify_error=None,
        )
        assert "the delegated name fed.example.org" in text

    def test_certificate_untrusted(self) -> None:
        """A certificate for the right name that does not verify is a chain problem."""
        text = hint_certificate(
            "example.org",
            ["example.org"],
            server_name="example.org",
            delegated_name=None,
            srv_target=None,
            verify_error="self-signed certificate",
        )
        assert "full chain" in text
        assert "self-signed certificate" in text

    def test_family_hint(self) -> None:
        """A .well-known answered over IPv4 only is named with both answers."""
        hint = hint_family(
            {
                "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
                "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(result="connection refused")}),
            }
        )
        assert hint is not None
        assert hint.step == STEP_WELL_KNOWN
        assert "IPv6 ::1: connection refused" in hint.problem
        assert (
            hint_family({"IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a")})})
        ) is None

    def test_order(self) -> None:
        """Hints come earliest step first, duplicates once."""
        later = Hint(STEP_KEYS, "k", "f")
        earlier = Hint(STEP_DNS, "d", "f")
        middle = Hint(STEP_CONNECTION, "c", "f")
        assert (order_hints([later, middle, earlier, later])) == (earlier, middle, later)

    def test_text_failing_step_first(self) -> None:
        """The text report opens with the verdict and then the earliest failing step."""
        report = CheckReport(
            "a.test",
            hints=order_hints([Hint(STEP_KEYS, "keys bad", "fix k"), Hint(STEP_DNS, "dns", "d")]),
        )
        lines = render_text(report).splitlines()
        assert lines[0] == "a.test: federation FAILED"
        assert lines[2] == "[DNS] dns"
