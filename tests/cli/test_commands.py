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
        """``stubserver run`` on an unreadable config exits 2 via ``stubserver.server.run``."""
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
