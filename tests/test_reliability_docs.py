"""docs/reliability.md names, for each promise, the test that checks it: every test it names
exists (a renamed or deleted test would leave a promise unchecked)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
NAMED = sorted(set(re.findall(r"`(tests/\w+\.py)::(\w+)`", DOC.read_text())))


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_the_document_names_tests():
    assert len(NAMED) >= 20


@pytest.mark.parametrize(("path", "name"), NAMED, ids=[f"{p}::{n}" for p, n in NAMED])
def test_every_test_the_document_names_exists(path, name):
    assert (ROOT / path).is_file(), path
    assert name in _test_functions(ROOT / path), f"{path} has no {name}"
