"""`make audit`: pip-audit over the test lock, failing only on a known vulnerability.

    python scripts/audit_dependencies.py [requirements/test.txt]

Runs ``pip-audit -r LOCK --disable-pip`` (the lock pins every package with its hashes, so
nothing is resolved or installed) and reads its JSON report:

- a known vulnerability in a locked package (not listed in `ACCEPTED` with a reason): the
  package, version, advisory and fixed versions are printed and the exit status is 1, on every
  machine, CI included;
- the vulnerability service unreachable (no network, a registry mirror without PyPI's JSON
  API: every package "not found"): a warning naming the cause, exit status 0, since that says
  nothing about the dependencies;
- otherwise a one-line summary, exit status 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Advisory id -> why it does not apply to runstate. Empty: nothing is accepted.
ACCEPTED: dict[str, str] = {}


def _pip_audit() -> Path:
    return Path(sys.executable).with_name("pip-audit")


def main(argv: list[str]) -> int:
    lock = argv[0] if argv else "requirements/test.txt"
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            str(_pip_audit()), "-r", lock, "--disable-pip", "--progress-spinner", "off",
            "--format", "json", "--output", str(report_path),
            *(arg for advisory in ACCEPTED for arg in ("--ignore-vuln", advisory)),
        ]  # fmt: skip
        ran = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            cause = (ran.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"audit: WARNING: pip-audit could not check {lock} ({cause[:300]})")
            return 0
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        print(f"audit: {len(vulnerable)} locked package(s) with known vulnerabilities in {lock}")
        return 1
    skipped = [d for d in dependencies if d.get("skip_reason")]
    if skipped:
        print(
            f"audit: WARNING: pip-audit could not check {len(skipped)} of {len(dependencies)} "
            f"packages (e.g. {skipped[0]['skip_reason']}); the vulnerability service is "
            "probably unreachable from here"
        )
        return 0
    print(f"audit: no known vulnerabilities in the {len(dependencies)} packages of {lock}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
