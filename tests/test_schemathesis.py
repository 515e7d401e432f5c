"""QUALITY R5: schemathesis against the served /openapi.json, once with an admin token and once
with a read-only one: 0 server errors, 0 schema violations (status, content type, headers,
body), 0 accepted invalid inputs.

It runs every check and every phase (coverage: boundaries and negative cases of each input;
fuzzing; stateful sequences) through schemathesis' own runner (`schemathesis run`; its pytest
plugin does not run on this pytest), with `tests/schemathesis.toml` for the few settings and
`tests/schemathesis_hooks.py` for NDJSON. CI-sized: 25 examples per operation and phase
(RUNSTATE_SCHEMATHESIS_EXAMPLES raises it); a fixed seed per token keeps runs repeatable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from http_server import start_server

HERE = Path(__file__).parent
EXAMPLES = os.environ.get("RUNSTATE_SCHEMATHESIS_EXAMPLES", "25")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("schemathesis"), durability="fast")
    yield server
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize(("role", "seed"), [("admin", "1"), ("read", "2")])
def test_the_api_keeps_to_its_openapi_document(served, role, seed):
    token = served.admin_token if role == "admin" else served.token(role)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{served.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        seed,
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)}
    result = subprocess.run(
        command, cwd=HERE, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert "Errors:" not in report, report[-20000:]
    assert "Schema validation skipped" not in report, report[-20000:]
