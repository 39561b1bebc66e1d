"""What a Beam run of `medtfod convert --runner` does on this machine, and how it stops.

`beam_convert` builds the pipeline; this module fences its side effects here: Beam's temporary
files go to a folder of the run (`own_temp`), its threads' failures to the log, and Ctrl-C
(`stoppable`) first stops what the in-process runner runs: its worker processes and the
`process` calls in this process (`CANCELLED`, `RUNNING`), so that nothing writes into the
staging folder once it is removed.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, List


class Running:
    """How many `process` calls are running in this process (their outputs, written by the
    sink in the same thread, included)."""

    def __init__(self):
        self.count, self._lock = 0, threading.Lock()

    def __enter__(self):
        with self._lock:
            self.count += 1

    def __exit__(self, *exc):
        with self._lock:
            self.count -= 1


CANCELLED = threading.Event()  # set by Ctrl-C: `process` calls in this process write nothing more
RUNNING = Running()


@contextlib.contextmanager
def own_temp() -> Iterator[None]:
    """Beam's temporary files (its and its worker processes') go to one folder of this run,
    removed at the end whatever happened (a failing runner leaves its own behind otherwise);
    its threads' failures go to the log, not the terminal."""
    import shutil
    import tempfile
    import logging
    folder = tempfile.mkdtemp(prefix="medtfod-beam-")
    saved_dir, saved_env = tempfile.tempdir, {k: os.environ.get(k) for k in ("TMPDIR", "TEMP", "TMP")}
    tempfile.tempdir = folder
    os.environ.update(TMPDIR=folder, TEMP=folder, TMP=folder)
    # Beam's threads fail loudly when the run stops (Ctrl-C, a worker's error): to the log.
    saved_hook = threading.excepthook
    threading.excepthook = lambda hook: logging.getLogger("medtfod.beam").warning(
        "thread %s failed", hook.thread.name if hook.thread else "?",
        exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback))
    try:
        yield
    finally:
        threading.excepthook = saved_hook
        tempfile.tempdir = saved_dir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """While the pipeline runs here: Ctrl-C first stops what the in-process runner runs, then
    raises KeyboardInterrupt, so that nothing writes into the stage once it is removed.

    Beam's bundle threads are daemons (they are not joined): `process` checks `CANCELLED`,
    and the handler waits for the calls in progress. Its worker processes
    (direct_running_mode=multi_processing) are not reached by a Ctrl-C sent to this process
    alone, and Beam's own clean-up would wait for them forever: they are stopped here.
    """
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        stop_local_workers()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def stop_local_workers(wait_seconds: float = 10) -> None:
    """Cancel the `process` calls of this process and kill the runner's worker processes;
    return when both have stopped (or after `wait_seconds`)."""
    import signal
    import time
    CANCELLED.set()
    children = [pid for pid, command in _descendants(str(os.getpid())) if b"sdk_worker_main" in command]
    for pid in children:  # SIGKILL: on SIGTERM Beam's harness would finish its bundle first
        with contextlib.suppress(OSError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.time() + wait_seconds
    while (RUNNING.count or any(_alive(pid) for pid in children)) and time.time() < deadline:
        time.sleep(0.02)


def _descendants(root: str) -> List[tuple]:
    """(pid, command line) of every process below `root` (Linux /proc; empty elsewhere, where
    Ctrl-C reaches the whole console group). Beam starts its workers through a shell, so they
    are grandchildren."""
    parents, commands = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else ()):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[entry] = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                commands[entry] = f.read()
        except (OSError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        below = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(below)
        frontier = below
    return [(pid, commands.get(pid, b"")) for pid in found]


def _alive(pid: str) -> bool:
    """A process that exists and has not exited (a zombie waits only for its parent's wait)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
