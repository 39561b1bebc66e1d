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

import json
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional

from .errors import UserError

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
        return f"{self.task_type} {self.task_index} ({what}; {self.rank + 1} of {self.workers} workers)"


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
    return hosts


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
    sizes = {job: len(cluster.get(job) or []) for job in TRAINING_JOBS}
    if sizes["chief"] > 1:
        raise UserError(f"TF_CONFIG lists {sizes['chief']} chiefs; a cluster has at most one")
    if not 0 <= task_index < sizes[task_type]:
        raise UserError(f"TF_CONFIG task {task_type} {task_index} is not in its cluster, which has "
                        f"{sizes[task_type]} {task_type} task(s)")
    rank = task_index if task_type == "chief" else sizes["chief"] + task_index
    return Role(workers=sizes["chief"] + sizes["worker"], task_type=task_type, task_index=task_index, rank=rank)


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
