"""Who this training process is in a multi-worker cluster: TensorFlow's `TF_CONFIG` convention.

`TF_CONFIG` is the JSON environment variable every TensorFlow launcher sets (Vertex AI custom
jobs, the Kubeflow training operator's TFJob, hand-written scripts), e.g.

    {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
     "task": {"type": "worker", "index": 1}}

Tasks that train are the `chief` (at most one) and the `worker`s; the chief is the one that
writes checkpoints and summaries, and when there is no `chief` job, worker 0 is the chief.
`medtfod train --cluster HOST:PORT,HOST:PORT --task-index I` writes this variable for the
process (`tf_config`), so a cluster can be started by hand with one command per machine.

Nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, List, Mapping, Optional

from ..core.errors import UserError

TRAINING_JOBS = ("chief", "worker")


@dataclass(frozen=True)
class Role:
    """This process's place in the cluster.

    `rank` is TensorFlow's id in the cluster (the chief 0, then the workers in order); it is
    also the index of this worker's input pipeline.
    """
    workers: int      # tasks that train: the chief (if any) plus the workers
    task_type: str    # "chief" or "worker"
    task_index: int
    rank: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        what = "the chief" if self.is_chief else "not the chief"
        return f"{self.task_type} {self.task_index} ({what}; {self.workers} workers in all)"


def parse_hosts(text: str) -> List[str]:
    """`--cluster host1:port,host2:port` -> the list of `host:port`, checked."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise UserError(f"--cluster {text!r}: give the workers as HOST:PORT,HOST:PORT (the chief first)")
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--cluster: {host!r} is not HOST:PORT (a port from 1 to 65535), e.g. 10.0.0.1:2222")
    repeated = sorted({h for h in hosts if hosts.count(h) > 1})
    if repeated:
        raise UserError(f"--cluster lists {', '.join(repeated)} more than once: each worker needs its own port")
    for i, a in enumerate(hosts):
        for b in hosts[i + 1:]:
            if _same_port(a, b):
                raise UserError(f"--cluster lists {a} and {b}: the same port on the same machine (a worker listens "
                                "on its port on every address of its machine), so give each worker its own port")
    return hosts


def _addresses(name: str) -> set:
    """The IP addresses `name` resolves to (loopback ones as "loopback"); {name} when it does
    not resolve here (a name only the cluster's network knows)."""
    import ipaddress
    import socket
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name.strip("[]"), None)}
    except (OSError, UnicodeError):
        return {name}
    return {"loopback" if ipaddress.ip_address(a.split("%")[0]).is_loopback else a for a in found}


def _same_port(a: str, b: str) -> bool:
    """Two HOST:PORT entries that would both listen on one port of one machine."""
    (host_a, _, port_a), (host_b, _, port_b) = a.rpartition(":"), b.rpartition(":")
    return port_a == port_b and bool(_addresses(host_a) & _addresses(host_b))


def tf_config(hosts: List[str], task_index: int) -> str:
    """The `TF_CONFIG` value for worker `task_index` of `hosts` (worker 0 is the chief)."""
    if not 0 <= task_index < len(hosts):
        raise UserError(f"--task-index {task_index}: the cluster has {len(hosts)} workers, so give 0 to "
                        f"{len(hosts) - 1} (0 is the chief)")
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}})


def role_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[Role]:
    """The role `TF_CONFIG` gives this process; None when it is unset (one machine).

    Raises:
      UserError: malformed JSON, a task missing from its cluster, or a role medtfod's
        synchronous training has no use for (a parameter server, an evaluator).
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        task_type, task_index = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not valid: {e}. It should look like "
                        '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}')
    if not task and cluster:
        raise UserError('TF_CONFIG has a "cluster" but no "task": every process needs its own, e.g. '
                        '"task": {"type": "worker", "index": 0} on the first worker (the chief), index 1 on the next')
    if task_type == "ps" or "ps" in cluster:
        raise UserError("TF_CONFIG has a parameter-server (ps) job: medtfod trains with MultiWorkerMirroredStrategy, "
                        "synchronous all-reduce between workers, which uses no parameter servers. Give only chief "
                        "and worker tasks")
    if task_type == "evaluator":
        raise UserError("TF_CONFIG makes this process the evaluator: evaluation runs apart from training in "
                        "medtfod; run `medtfod eval --config CONFIG --model-dir MODEL_DIR --all` on the chief's "
                        "MODEL_DIR (during or after training) instead of `medtfod train`")
    if task_type not in TRAINING_JOBS:
        raise UserError(f"TF_CONFIG task type {task_type!r}: expected one of {', '.join(TRAINING_JOBS)}")
    for job in TRAINING_JOBS:
        tasks = cluster.get(job)
        if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
            raise UserError(f"TF_CONFIG cluster {job!r} is {tasks!r}: give a list of \"HOST:PORT\" strings, "
                            f'e.g. "{job}": ["10.0.0.1:2222", "10.0.0.2:2222"]')
    sizes = {job: len(cluster.get(job) or []) for job in TRAINING_JOBS}
    if sizes["chief"] > 1:
        raise UserError(f"TF_CONFIG lists {sizes['chief']} chiefs; a cluster has at most one")
    if not 0 <= task_index < sizes[task_type]:
        raise UserError(f"TF_CONFIG task {task_type} {task_index} is not in its cluster, which has "
                        f"{sizes[task_type]} {task_type} task(s)")
    rank = task_index if task_type == "chief" else sizes["chief"] + task_index
    return Role(workers=sizes["chief"] + sizes["worker"], task_type=task_type, task_index=task_index, rank=rank)


def drop_blank_tf_config() -> None:
    """Remove a TF_CONFIG that is set but blank (`set TF_CONFIG=` on Windows, `TF_CONFIG= cmd`):
    it means no cluster, but TensorFlow's own strategies parse it as JSON and fail."""
    if "TF_CONFIG" in os.environ and not os.environ["TF_CONFIG"].strip():
        del os.environ["TF_CONFIG"]


def role_from_flags(hosts: Optional[str], task_index: Optional[int], num_workers: Optional[int]) -> Optional[Role]:
    """This process's role from `medtfod train`'s flags: --cluster/--task-index set TF_CONFIG
    for the process (refused when TF_CONFIG is already set), else TF_CONFIG as found;
    checked against --num-workers when that is given."""
    if hosts is not None or task_index is not None:
        if hosts is None or task_index is None:
            raise UserError("--cluster and --task-index go together: --cluster HOST:PORT,HOST:PORT lists every "
                            "worker (the chief first), --task-index says which one this process is")
        if os.environ.get("TF_CONFIG", "").strip():
            raise UserError("TF_CONFIG is already set in the environment; give either it or --cluster/--task-index")
        os.environ["TF_CONFIG"] = tf_config(parse_hosts(hosts), task_index)
    role = role_from_env()
    workers = role.workers if role else 1
    if num_workers is not None and num_workers != workers:
        raise UserError(f"--num-workers {num_workers}, but " + (
            f"the cluster has {workers} workers" if role else "no cluster is given: start one process per "
            "worker with --cluster HOST:PORT,HOST:PORT --task-index I (or TF_CONFIG)"))
    return role


@contextlib.contextmanager
def exit_on_interrupt(message: Callable[[], str]) -> Iterator[None]:
    """While active, Ctrl-C or SIGTERM ends the process at once: `medtfod: <message()>` on
    stderr, exit status 128 + the signal number (130 for Ctrl-C).

    A training worker spends its time inside TensorFlow's C++ (a block of 100 steps, a
    collective), where Python's own handlers run only when the call returns, which can be
    minutes. Python's C-level handler still notes the signal at once and writes it to the
    wakeup fd (`signal.set_wakeup_fd`); a thread reading that fd does the exit (TensorFlow
    releases the GIL while it runs ops; where it does not, see `default_signals`). There is
    nothing to tidy up: the chief's checkpoints are whole files, and a restart resumes from
    the latest.
    """
    import signal
    import socket
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done, once = threading.Event(), threading.Lock()

    def stop(signum: int) -> None:
        # The watcher and Python's own handler (when the main thread gets back to Python) may
        # both get here: one says it and exits.
        if not once.acquire(blocking=False):
            threading.Event().wait()
        print(f"\nmedtfod: {message()}", file=sys.stderr, flush=True)  # after a progress bar's line
        os._exit(128 + signum)

    def watch() -> None:
        data = reader.recv(1)
        if data and not done.is_set():
            stop(data[0])

    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, lambda signum, frame: stop(signum)) for s in signals}
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="medtfod-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        _restore(previous)
        with contextlib.suppress(OSError):
            writer.send(b"\0")
        watcher.join(timeout=5)
        reader.close()
        writer.close()


@contextlib.contextmanager
def default_signals() -> Iterator[None]:
    """While active, Ctrl-C and SIGTERM kill the process outright (the system's default action,
    exit status 130/143 as the shell reports it), without a message.

    For calls into TensorFlow that hold the GIL while they block, such as joining the cluster:
    no Python code (handler or thread) can run until they return, so a signal must not depend
    on one. Nothing has been written at that point.
    """
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _restore(previous)


def _restore(previous: dict) -> None:
    """Put back the handlers `signal.signal` returned (None: one set outside Python, which
    cannot be put back; the system default instead)."""
    import signal
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)
