"""The command table (issue 11: one module per command under ``stubserver.cli``)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from stubserver.cli.main import COMMANDS, EXIT_USAGE


class CommandTableTests(SynchronousTestCase):
    def test_each_command_has_its_own_cli_module(self) -> None:
        """Every command's entry is ``main`` in ``stubserver.cli.<command>``, and is callable."""
        for command, target in COMMANDS.items():
            module_name, func_name = target.split(":")
            assert (module_name, func_name) == (f"stubserver.cli.{command}", "main"), command
            assert callable(getattr(importlib.import_module(module_name), func_name)), command

    def test_run_entry_calls_the_composition_root(self) -> None:
        """``stubserver run`` on an unreadable config exits 2 via ``stubserver.app.run``."""
        result = subprocess.run(
            [sys.executable, "-m", "stubserver", "run", "-c", "/nonexistent/stub.yaml"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == EXIT_USAGE
        assert "config error" in result.stderr

    def test_resolve_refuses_a_bad_name_with_usage_status(self) -> None:
        """``python -m stubserver resolve`` with a malformed name exits 2 before reaching out."""
        result = subprocess.run(
            [sys.executable, "-m", "stubserver", "resolve", "bad name!"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == EXIT_USAGE
        assert result.stderr.startswith("stubserver resolve: ")


#: Modules ``run`` must not load before it signs anything (issue 11's start-up budget):
#: signedjson (whose import loads importlib.metadata) and the commands `run` never uses.
NOT_LOADED_BY_RUN = (
    "signedjson",
    "importlib.metadata",
    "stubserver.cli.room",
    "stubserver.cli.conformance",
)


class StartUpImportTests(SynchronousTestCase):
    def test_run_parses_its_arguments_and_config_without_the_heavy_modules(self) -> None:
        """Parsing ``run``'s arguments and loading its config (signing key included) loads
        neither signedjson nor the room and conformance commands."""
        import tempfile
        from pathlib import Path

        from stubserver.tls.certificates import make_ca
        from tests.support import write_stub

        directory = Path(tempfile.mkdtemp())
        config = write_stub(directory, "lazy.test", make_ca("lazy CA"))
        code = (
            "import sys\n"
            "from stubserver.cli.main import build_parser\n"
            "from pathlib import Path\n"
            "from stubserver.config import load_config\n"
            f"build_parser(['run', '-c', {str(config)!r}]).parse_args(['run', '-c', 'x'])\n"
            f"load_config(Path({str(config)!r}))\n"
            f"print([m for m in {NOT_LOADED_BY_RUN!r} if m in sys.modules])\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]", result.stdout
