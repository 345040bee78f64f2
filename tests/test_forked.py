"""Shares of a batch moved by forked children (``regstore.engine.forked``): outcomes and events
come back here by job index, a child that dies fails only its share, and nothing is forked
while another thread runs.

Each case runs in a fresh interpreter: forking refuses to happen in a process with other
threads, and a pytest worker has some (its channel to the controller).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from regstore.engine.forked import deal

HEAD = """
import json, os, signal, sys, threading, time
from regstore.engine.forked import Forked, deal
from regstore.engine.model import ImageOutcome
from regstore.errors import UnsupportedError
from regstore.events import EventKind, TransferEvent

def outcome(i):
    return ImageOutcome(f"job{i}", str(os.getpid()), "copied")

def describe(i):
    return f"job{i}", "dest"

def sleeping(share, events):  # a share that takes a minute: stopped before it ends
    time.sleep(60)
    return [outcome(i) for i in share]

def alive(pids):
    left = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            left.append(pid)
        except ProcessLookupError:
            pass
    return left

def report(found, **extra):
    print(json.dumps({
        "parent": os.getpid(),
        "found": {str(i): [o.source, o.destination, o.status, o.error] for i, o in found.items()},
        **extra,
    }))
"""


def _run(body: str, timeout: float = 60.0) -> tuple[dict[str, Any], str]:
    """Run HEAD + ``body`` in a fresh interpreter: its last stdout line as JSON, its stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", HEAD + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_each_share_runs_in_a_child_of_its_own_and_reports_here_by_index() -> None:
    result, _ = _run(
        """
        def run(share, events):
            for i in share:
                events(TransferEvent(EventKind.MANIFEST, "copy", f"job{i}", str(os.getpid())))
            return [outcome(i) for i in share]

        seen = []
        children = Forked.start(deal(7, 2), run, events=True)
        found = children.gather(seen.append, describe)
        report(found, events=[[e.image, e.digest] for e in seen])
        """
    )
    found, parent = result["found"], str(result["parent"])
    assert sorted(found, key=int) == [str(i) for i in range(7)]
    assert all(found[str(i)][0] == f"job{i}" and found[str(i)][2] == "copied" for i in range(7))
    pids = {found[str(i)][1] for i in range(7)}
    assert len(pids) == 2 and parent not in pids  # two children, neither this process
    assert {found[str(i)][1] for i in (0, 2, 4, 6)} != {found[str(i)][1] for i in (1, 3, 5)}
    # every event reached the sink here, from the child that moved its job
    assert sorted(image for image, _ in result["events"]) == sorted(f"job{i}" for i in range(7))
    assert all(found[image[3:]][1] == pid for image, pid in result["events"])


def test_a_child_that_dies_fails_its_share_only() -> None:
    result, _ = _run(
        """
        def run(share, events):
            if 1 in share:
                os.kill(os.getpid(), signal.SIGKILL)
            return [outcome(i) for i in share]

        report(Forked.start(deal(4, 2), run, events=False).gather(None, describe))
        """
    )
    found = result["found"]
    assert [found[k][2] for k in ("0", "2")] == ["copied", "copied"]
    for k in ("1", "3"):
        source, _, status, error = found[k]
        assert (source, status) == (f"job{k}", "failed")
        assert "ended without a report (killed by SIGKILL)" in error


def test_a_share_whose_work_raises_is_failed_with_the_error_s_text() -> None:
    result, stderr = _run(
        """
        def run(share, events):
            if 0 in share:
                raise ValueError("the registry went away")
            return [outcome(i) for i in share]

        report(Forked.start(deal(2, 2), run, events=False).gather(None, describe))
        """
    )
    assert result["found"]["1"][2] == "copied"
    assert result["found"]["0"][2] == "failed"
    assert "failed: ValueError: the registry went away" in result["found"]["0"][3]
    # its traceback is logged (at INFO: the CLI shows it with -v, secrets masked), not printed
    assert "Traceback" not in stderr


def test_children_end_when_their_parent_is_killed(tmp_path: Any) -> None:
    import os
    import signal
    import time

    pids = tmp_path / "pids"
    script = HEAD + textwrap.dedent(
        f"""
        children = Forked.start(deal(2, 2), sleeping, events=False)
        open({str(pids)!r}, "w").write(" ".join(str(c.pid) for c in children._children))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pids.exists() or not pids.read_text():
            assert time.monotonic() < deadline, "the children were not forked"
            time.sleep(0.05)
        children = [int(pid) for pid in pids.read_text().split()]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()

        def running(pid: int) -> bool:  # a zombie left to whoever reaps orphans counts as ended
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                return False
            return state != "Z"

        deadline = time.monotonic() + 10
        while any(running(pid) for pid in children):
            assert time.monotonic() < deadline, "a child went on after its parent was killed"
            time.sleep(0.05)
    finally:
        parent.kill()


def test_a_fork_the_system_refuses_leaves_no_child_running() -> None:
    result, _ = _run(
        """
        real_fork, forks = os.fork, []

        def failing_fork():
            if forks:
                raise OSError(11, "Resource temporarily unavailable")
            forks.append(real_fork())
            return forks[-1]

        os.fork = failing_fork

        try:
            Forked.start(deal(2, 2), sleeping, events=False)
            refused = None
        except UnsupportedError as exc:
            refused = str(exc)
        os.fork = real_fork
        report({}, refused=refused, alive=alive(forks))
        """
    )
    assert "cannot fork a worker process" in result["refused"]
    assert result["alive"] == []  # the first child was stopped and reaped


def test_an_outcome_whose_exception_cannot_cross_arrives_without_it() -> None:
    result, _ = _run(
        """
        def run(share, events):
            class Local(Exception):  # a local class: pickle cannot name it
                pass
            return [ImageOutcome(f"job{i}", "d", "failed", error="refused", exception=Local())
                    for i in share]

        found = Forked.start(deal(2, 2), run, events=False).gather(None, describe)
        report(found, exceptions=[o.exception is None for o in found.values()])
        """
    )
    assert [v[2:] for v in result["found"].values()] == [["failed", "refused"]] * 2
    assert result["exceptions"] == [True, True]


def test_nothing_is_forked_while_another_thread_runs(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    result, _ = _run(
        f"""
        def run(share, events):
            open({str(marker)!r}, "w").close()
            return [outcome(i) for i in share]

        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            Forked.start(deal(2, 2), run, events=False)
            refused = None
        except UnsupportedError as exc:
            refused = str(exc)
        finally:
            stop.set()
        report({{}}, refused=refused)
        """
    )
    assert result["refused"] is not None and "thread" in result["refused"]
    assert not marker.exists()


def test_stop_ends_children_still_working() -> None:
    result, _ = _run(
        """
        started = time.monotonic()
        children = Forked.start(deal(2, 2), sleeping, events=False)
        time.sleep(0.2)
        children.stop()
        found = children.gather(None, describe)
        report(found, seconds=time.monotonic() - started)
        """,
        timeout=50,
    )
    assert result["seconds"] < 30
    assert all("killed by SIGTERM" in v[3] for v in result["found"].values())


def test_a_ctrl_c_while_forking_leaves_no_child_behind() -> None:
    result, _ = _run(
        """
        # Python's own Ctrl-C handler, even where this runs as a background job (SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        real_fork, forks = os.fork, []

        def fork_with_ctrl_c():
            os.kill(os.getpid(), signal.SIGINT)  # held back until the children are forked
            pid = real_fork()
            if pid:
                forks.append(pid)
            return pid

        os.fork = fork_with_ctrl_c

        try:
            Forked.start(deal(3, 3), sleeping, events=False)
            raised = None
        except KeyboardInterrupt:
            raised = "KeyboardInterrupt"
        os.fork = real_fork
        report({}, raised=raised, forked=len(forks), alive=alive(forks))
        """
    )
    assert result["raised"] == "KeyboardInterrupt"
    assert result["forked"] == 3  # every fork went through, then the interrupt was raised
    assert result["alive"] == []  # each child stopped and reaped


def test_deal_spreads_neighbours_round_robin() -> None:
    assert deal(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert deal(2, 4) == [[0], [1]]  # never an empty share
    assert deal(5, 1) == [[0, 1, 2, 3, 4]]
    assert deal(0, 2) == []  # nothing to move: no child
