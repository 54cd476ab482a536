"""Smoke test of bench/inbox.py: its --quick run works end to end (figures are not judged here).

The benchmark itself (100,000 reports, latency targets) is run by hand; this
only keeps it from rotting: a 2,000-report instance, the case server and the
reviewer app as real processes on loopback, a sign-in through the form, and
every page once or a few times. It must exit 0 (no page over its API
round-trip budget, nothing wrong on a page) and print the round-trip table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_quick_benchmark_runs_and_every_page_keeps_its_round_trip_budget(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "inbox.py"), "--quick", "--dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "API round trips and latency per page" in done.stdout, output
    pages = ("OIO inbox default sort", "ECO report page (10 items)", "ECO report page with a file")
    for page in pages:
        line = next((x for x in done.stdout.splitlines() if x.startswith(page)), None)
        assert line is not None, output
        assert " ok" in line, line
    assert "MISSED" not in done.stdout, output
    assert done.stdout.rstrip().endswith("met"), output
    # The temporary instance is gone.
    assert list(tmp_path.iterdir()) == []
