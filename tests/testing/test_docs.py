"""docs/testing.md shows the example test exactly as tests/testing/test_example.py has it."""

from __future__ import annotations

from tests.support import REPO_ROOT


def test_the_documented_example_is_the_tested_file() -> None:
    """The example's code block in docs/testing.md is the file, byte for byte."""
    doc = (REPO_ROOT / "docs" / "testing.md").read_text()
    example = (REPO_ROOT / "tests" / "testing" / "test_example.py").read_text()
    assert f"```python\n{example}```" in doc
