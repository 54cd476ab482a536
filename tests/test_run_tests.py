"""scripts/run_tests.py, which `make test` runs: two lanes at once, a failure stops both.

The phases here are small Python commands, not pytest runs, so that each
behaviour shows in a second or two.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests import conftest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "run_tests.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_tests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_tests"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


run_tests = _load()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process started as a background job of a shell without job control would."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run_tests.let_phases_have_sigint()
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("sigint_ignored")
def test_a_failed_phase_stops_the_other_lane_and_gives_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Phase, Lane = run_tests.Phase, run_tests.Lane
    out = threading.Lock()
    failing = Phase(
        "fails", python("import sys, time; time.sleep(0.5); print('broken'); sys.exit(3)")
    )
    long = Phase("long", python("import time; time.sleep(120)"))
    later = Phase("later", python("pass"))
    lanes = [
        Lane("one", [failing], {}, [], tmp_path, out),
        Lane("two", [long, later], {}, [], tmp_path, out),
    ]
    started = time.monotonic()
    code = run_tests.run_lanes(lanes, None)
    took = time.monotonic() - started
    printed = capsys.readouterr().out
    assert code == 3
    assert took < 30, f"the other lane was not stopped: {took:.1f} s\n{printed}"
    assert long.code not in (0, None)  # interrupted
    assert later.seconds is None and later.code is None  # never started
    assert "broken" in printed and "fails FAILED with exit code 3" in printed
    assert "later not run" in printed
    assert "stopped after another phase failed: long" in printed


def test_when_every_phase_passes_each_is_timed_in_its_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Phase, Lane = run_tests.Phase, run_tests.Lane
    out = threading.Lock()
    first, second = Phase("first", python("print('one')")), Phase("second", python("print('two')"))
    other = Phase("other", python("import os; print(os.environ['DROPBOX_TEST_PORTS'])"))
    lanes = [
        Lane("a", [first, second], {}, [], tmp_path, out),
        Lane("b", [other], {run_tests.PORTS: "20000-20100"}, [], tmp_path, out),
    ]
    assert run_tests.run_lanes(lanes, None) == 0
    printed = capsys.readouterr().out
    assert printed.index("\none\n") < printed.index("\ntwo\n")
    assert "\n20000-20100\n" in printed  # each lane's own ports reach its phases
    assert all(p.code == 0 and p.seconds is not None for p in (first, second, other))
    assert "first 0:0" in printed and "second 0:0" in printed and "other 0:0" in printed


def test_the_bulk_lane_has_a_small_share_and_what_it_leaves_running_is_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a cgroup (root, as in CI): its processes are in it; else they run at nice 19."""
    priority = run_tests.LowPriority()
    group = priority.group
    leaves = python(
        "import os, subprocess; "
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True); "
        "print('cgroup:', open('/proc/self/cgroup').read().replace(chr(10), ' ')); "
        "print('nice:', os.nice(0)); print('left:', child.pid)"
    )
    phase = run_tests.Phase("leaves", leaves)
    lane = run_tests.Lane("bulk", [phase], {}, priority.prefix(), tmp_path, threading.Lock())
    assert run_tests.run_lanes([lane], priority) == 0
    printed = capsys.readouterr().out
    left = int(printed.split("left: ", 1)[1].split()[0])
    if group is not None:
        assert f"/{group.name}" in printed.split("cgroup: ", 1)[1].split("\n")[0]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and running(left):
            time.sleep(0.05)
        assert not running(left), "the process left behind still runs"
        assert f"killed a process a lane left running: {left}: sleep 300" in printed
        assert not group.exists()
    else:
        assert "nice: 19" in printed
        os.kill(left, 9)


def test_free_port_picks_only_in_the_range_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv(conftest.PORTS_VARIABLE, "30000-30400")
    ports = {conftest.free_port() for _ in range(20)}
    assert all(30200 <= port < 30400 for port in ports), ports  # worker 1's half
    monkeypatch.setenv(conftest.PORTS_VARIABLE, "30000")
    with pytest.raises(RuntimeError, match="LOW-HIGH"):
        conftest.free_port()


def test_the_lanes_ports_do_not_overlap_and_stay_below_the_ephemeral_range() -> None:
    ranges = sorted(tuple(map(int, p.split("-"))) for p in run_tests.LANE_PORTS.values())
    assert set(run_tests.LANE_PORTS) == set(run_tests.phases(4))
    assert run_tests.PORTS == conftest.PORTS_VARIABLE
    for (low, high), (next_low, _) in itertools.pairwise(ranges):
        assert low < high <= next_low
    assert ranges[0][0] >= 1024 and ranges[-1][1] <= conftest._ephemeral_low()
