#!/usr/bin/env python3
"""Run the test phases of `make test` in two lanes at once, and print each phase's time.

The serial lane runs, one at a time, the tests marked `serial` (they measure
wall time or memory), on SQLite then on PostgreSQL. The bulk lane runs
everything else, spread over pytest-xdist workers: the whole suite on SQLite
with the browser suite, then on PostgreSQL the modules marked database_engine.

The serial tests keep about one core of two busy. The bulk lane takes what
they leave: its processes are in a cgroup with a small CPU share (cgroup v1's
cpu.shares, or cgroup v2's cpu.weight at the root), so that when the lanes
compete the serial tests get nearly all of the CPU they want, as if they ran
alone. Where no cgroup can be made (not root, or no CPU controller), the bulk
lane runs at nice 19, which shields the serial tests less: with the kernel's
autogroups, a server that a test starts in a session of its own is not niced.

Each lane picks its free ports in its own range (DROPBOX_TEST_PORTS, read by
tests/conftest.py). Each phase's output goes to tests/artifacts/phases/ and
is printed whole when the phase ends. The first phase to fail stops its lane,
interrupts the other (pytest then stops its servers) and gives the exit code.
A process left in the cgroup after the lanes end (a server a test did not
stop) is named and killed.

Usage: .venv/bin/python scripts/run_tests.py [--workers N] [--sequential]
(--sequential runs the phases one after the other.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = str(Path(sys.executable).parent / "pytest")
LOGS = ROOT / "tests" / "artifacts" / "phases"
# The bulk lane's CPU share against the other processes' 1024 each (cgroup v1;
# the v2 weight is scaled the same way). At 2 the browser suite's private Tor
# network stalled while the load tests took both cores; at 128 the SQLite serial
# tests took 98 s, against 94 s alone.
LOW_SHARES = 128
NICE_FALLBACK = 19
# Each lane's ports (tests/conftest.py, free_port and PORTS_VARIABLE): below the
# kernel's ephemeral range. This script uses only the standard library, so the
# variable's name is written here too; tests/test_run_tests.py checks they agree.
PORTS = "DROPBOX_TEST_PORTS"
LANE_PORTS = {"bulk": "10000-27000", "serial": "27000-32768"}
POSTGRES = {"DROPBOX_TEST_DATABASE": "postgresql"}
# How long a stopped phase has to end on its own (pytest stopping its servers).
STOP_SECONDS = 60


@dataclass
class Phase:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None
    code: int | None = None


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def phases(workers: int) -> dict[str, list[Phase]]:
    """Each lane's phases, by lane."""
    spread = [PYTEST, "-n", str(workers), "--dist", "loadgroup", "-m"]
    return {
        "serial": [
            Phase("SQLite serial", [PYTEST, "-m", "serial"]),
            Phase(
                "PostgreSQL serial",
                [PYTEST, "-m", "database_engine and not browser and serial"],
                POSTGRES,
            ),
        ],
        # The browser suite stays on one of the workers (tests/conftest.py). In a
        # lane of its own it took longer: 6:25 in the low share beside the bulk
        # lane, and 3:59 after the serial tests in theirs, in which it mostly waits.
        "bulk": [
            Phase("SQLite in parallel (with the browser suite)", [*spread, "not serial"]),
            Phase(
                "PostgreSQL in parallel",
                [*spread, "database_engine and not browser and not serial"],
                POSTGRES,
            ),
        ],
    }


class LowPriority:
    """A cgroup with a small CPU share for the bulk lane, or nice 19 where none can be made."""

    def __init__(self) -> None:
        self.group: Path | None = None
        self.how = f"nice {NICE_FALLBACK} (no cgroup could be made)"
        name = f"dropbox-tests-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        try:
            if (v1 / "cpu.shares").is_file():
                (v1 / name).mkdir()
                self.group = v1 / name
                (self.group / "cpu.shares").write_text(f"{LOW_SHARES}\n")
                self.how = f"cgroup v1, cpu.shares {LOW_SHARES} (others 1024)"
            elif "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
                (v2 / name).mkdir()
                self.group = v2 / name
                weight = max(1, LOW_SHARES * 100 // 1024)
                (self.group / "cpu.weight").write_text(f"{weight}\n")
                self.how = f"cgroup v2, cpu.weight {weight} (others 100)"
        except OSError:
            self.remove()

    def prefix(self) -> list[str]:
        """What the bulk lane's commands start with: join the group, or lower their priority."""
        if self.group is None:
            return ["nice", "-n", str(NICE_FALLBACK)]
        join = 'echo $$ > "$0" || { echo "run-tests: cannot join the cgroup $0" >&2; exit 1; }'
        return ["sh", "-c", f'{join}; exec "$@"', str(self.group / "cgroup.procs")]

    def left_behind(self) -> list[str]:
        """Kill what is still in the group; describe each process killed."""
        if self.group is None:
            return []
        found = []
        try:
            pids = [int(p) for p in (self.group / "cgroup.procs").read_text().split()]
        except OSError:
            return []
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                os.kill(pid, signal.SIGKILL)
                found.append(f"{pid}: {command.strip()}")
            except OSError:
                continue
        return found

    def remove(self) -> None:
        if self.group is None:
            return
        for _ in range(50):
            try:
                self.group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # its last processes are still exiting
        self.group = None


class Lane:
    """Phases run one after the other in a thread; stops at the first that fails."""

    def __init__(
        self,
        name: str,
        steps: list[Phase],
        env: dict[str, str],
        prefix: list[str],
        logs: Path,
        out: threading.Lock,
    ) -> None:
        self.name = name
        self.steps = steps
        self.env = env
        self.prefix = prefix
        self.logs = logs
        self.out = out
        self.failed: Phase | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.phase: Phase | None = None  # the one self.process runs
        self.stopping = False
        self.lock = threading.Lock()  # between starting a phase and stopping the lane
        self.thread = threading.Thread(target=self.run, name=name)

    def say(self, text: str) -> None:
        with self.out:
            sys.stdout.write(text)
            sys.stdout.flush()

    def run(self) -> None:
        for phase in self.steps:
            log_path = self.logs / (phase.name.split(" (")[0].replace(" ", "-").lower() + ".log")
            started = time.monotonic()
            with self.lock:
                if self.stopping:
                    return  # before its log is made: a phase never started has none
                self.say(f"run-tests: {phase.name} ({self.name} lane): {' '.join(phase.argv)}\n")
                with log_path.open("wb") as log:
                    self.phase = phase
                    self.process = subprocess.Popen(
                        [*self.prefix, *phase.argv],
                        cwd=ROOT,
                        env={**os.environ, **self.env, **phase.env},
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # so that a stop reaches its servers too
                    )
            phase.code = self.process.wait()
            phase.seconds = time.monotonic() - started
            output = log_path.read_text(errors="replace")
            if phase.code == 0:
                verdict = "took"
            elif self.stopping:
                verdict = "stopped (another phase failed) after"
            else:
                verdict = f"FAILED with exit code {phase.code} after"
            self.say(
                f"\n===== run-tests: {phase.name} ({self.name} lane) =====\n{output}"
                f"run-tests: {phase.name} {verdict} {clock(phase.seconds)}\n\n"
            )
            if phase.code != 0:
                if not self.stopping:
                    self.failed = phase
                return

    def stop(self) -> None:
        """Start no other phase; interrupt the running one (pytest stops its servers) or kill it."""
        with self.lock:
            self.stopping = True
            process, phase = self.process, self.phase
        if process is None or phase is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.say(
                f"run-tests: {phase.name} ({self.name} lane) did not stop "
                f"within {STOP_SECONDS} s of SIGINT: killed\n"
            )
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_lanes(lanes: list[Lane], priority: LowPriority | None) -> int:
    """Run the lanes at once; print each phase's time; the first failed phase's exit code."""
    started = time.monotonic()
    for lane in lanes:
        lane.thread.start()
    try:
        stopped = False
        while any(lane.thread.is_alive() for lane in lanes):
            for lane in lanes:
                lane.thread.join(timeout=0.2)
            if not stopped and any(lane.failed for lane in lanes):
                stopped = True
                for lane in lanes:
                    if lane.failed is None:
                        lane.stop()
    finally:
        if priority is not None:
            for line in priority.left_behind():
                print(f"run-tests: killed a process a lane left running: {line}")
            priority.remove()
    every = [phase for lane in lanes for phase in lane.steps]
    times = ", ".join(
        f"{phase.name} {clock(phase.seconds)}"
        if phase.seconds is not None
        else f"{phase.name} not run"
        for phase in every
    )
    print(f"run-tests: {clock(time.monotonic() - started)} in all: {times}")
    failed = [lane.failed for lane in lanes if lane.failed is not None]
    stopped_phases = [p for p in every if p.code not in (0, None) and p not in failed]
    if stopped_phases:
        print(
            "run-tests: stopped after another phase failed: "
            + ", ".join(p.name for p in stopped_phases)
        )
    if failed:
        return failed[0].code or 1
    return 0


def let_phases_have_sigint() -> None:
    """Let the phases have SIGINT, with which a stop interrupts them, even if it is ignored here.

    A shell without job control starts a background job (`make test &`) with
    SIGINT ignored, and every process inherits that: a phase that ignores it
    can only be killed, after STOP_SECONDS, and pytest then leaves its servers
    running. A handler of our own (this process still takes no notice) is
    reset to the default in each child, where pytest's own takes over.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda _signum, _frame: None)


def main() -> int:
    let_phases_have_sigint()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="pytest-xdist workers (default 4)")
    parser.add_argument("--sequential", action="store_true", help="one phase after another")
    options = parser.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    lanes = phases(options.workers)
    out = threading.Lock()
    if options.sequential:
        print("run-tests: one phase after the other", flush=True)
        every = [phase for steps in lanes.values() for phase in steps]
        return run_lanes([Lane("only", every, {}, [], LOGS, out)], None)
    priority = LowPriority()
    print(f"run-tests: two lanes at once; the bulk lane's priority: {priority.how}")
    sys.stdout.flush()
    return run_lanes(
        [
            Lane(
                name,
                steps,
                {PORTS: LANE_PORTS[name]},
                [] if name == "serial" else priority.prefix(),
                LOGS,
                out,
            )
            for name, steps in lanes.items()
        ],
        priority,
    )


if __name__ == "__main__":
    sys.exit(main())
