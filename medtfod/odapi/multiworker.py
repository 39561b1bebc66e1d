"""Multi-worker training around the OD API's own loop: the strategy, its timeouts, input sharding.

`model_lib_v2.train_loop` already does the multi-worker part the TF guide asks for: under a
`MultiWorkerMirroredStrategy` only the chief saves checkpoints and summaries into MODEL_DIR,
the other workers write theirs to `MODEL_DIR/.../temp_worker_NNN` and remove them at the end.
Three things are added here, none of which changes the OD API's code:

  * Timeouts (`make_strategy`). TensorFlow waits for a missing worker to join forever; here
    the wait is bounded (`--cluster-timeout`). A worker that dies stops sending heartbeats to
    the coordination service, which aborts the collectives within about `HEARTBEAT_TIMEOUT`
    seconds, so the survivors get an `UnavailableError` (turned into `lost_worker_error`)
    instead of hanging.
  * Input sharding. The OD API shards its input *by file* (`dataset_builder.
    shard_function_for_context`): worker i reads files i, i+N, ... With fewer train files than
    workers some worker gets none and stops at its first step (`OutOfRangeError`); with a
    count that is not a multiple of N the workers' shares differ. A converted medical data
    set is often one shard. So when the file count is not a multiple of the workers,
    `shard_by_example` makes every worker read every file and keep records i, i+N, ... of
    each: disjoint shares that together cover the data, for any number of files, without
    converting again. The price is that each worker reads (not decodes) all the bytes.
  * The global batch. `train_config.batch_size` is the global batch; the OD API divides it
    by the replicas in sync (workers × devices per worker). `check_batch` says so before
    TensorFlow would fail with a ValueError.
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, Iterator, List, Optional

from ..training.cluster import default_signals
from ..core.errors import UserError

HEARTBEAT_TIMEOUT = 10  # seconds without a heartbeat before a worker counts as dead (TF's default)


def make_strategy(tf, wait_seconds: int):
    """A `MultiWorkerMirroredStrategy` from TF_CONFIG that waits at most `wait_seconds` for
    every worker to join, and whose workers stop within about `HEARTBEAT_TIMEOUT` seconds
    of one of them dying.

    TensorFlow 2.20 runs its cluster through the coordination service: when the strategy
    finds the service unconfigured it configures it itself, and then a worker whose peers
    never start waits for them forever (measured: still waiting after 10 minutes).
    Configuring the same service first, with the same leader and jobs as
    `CollectiveAllReduceExtended._initialize_multi_worker` but with a registration barrier
    and timeouts, is the one change; there is no public argument for these.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
    from tensorflow.python.eager import context

    resolver = TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        cluster_register_timeout_in_ms=wait_seconds * 1000,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT * 1000,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                          for job in ("chief", "worker") if job in spec.jobs])
    # Without the barrier, registering does not wait (or time out) for the other workers; the
    # first collective then waits for them forever.
    context.context().coordination_service.cluster_register_with_barrier = True
    try:
        with default_signals():  # the wait below holds the GIL: Ctrl-C must not need Python
            return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.InternalError) as e:
        missing = _peers(str(e), own=f"{resolver.task_type} {resolver.task_id}")
        raise UserError(f"not every worker joined within {wait_seconds} s (--cluster-timeout)"
                        + (f"; missing: {', '.join(missing)}" if missing else f" ({type(e).__name__})")
                        + ". Start `medtfod train` on every machine of the cluster, with the same --cluster "
                        "(or TF_CONFIG cluster) and each its own --task-index, and check that the ports are "
                        "reachable between the machines") from None
    except tf.errors.UnknownError as e:
        if "Could not start gRPC server" not in str(e):
            raise
        address = spec.task_address(resolver.task_type, resolver.task_id)
        raise UserError(f"{resolver.task_type} {resolver.task_id} could not listen on {address}, its address in "
                        "the cluster: is the port in use (an earlier run still exiting, another program)? Free "
                        "it or give this worker another port in --cluster (the same list on every worker)") from None


def check_batch(batch_size: int, replicas: int, workers: int) -> None:
    if batch_size % replicas:
        per = replicas // workers
        nearest = max(replicas, round(batch_size / replicas) * replicas)
        raise UserError(f"train_config.batch_size {batch_size} is the global batch: it is split evenly over "
                        f"{replicas} replicas ({workers} workers x {per} device(s) each), so it must be a multiple "
                        f"of {replicas}; render the config again with `medtfod config --batch-size {nearest}` "
                        f"(or --set train_config.batch_size={nearest})")


def check_agreement(tf, strategy, settings: Dict[str, int], describe: str) -> None:
    """Refuse to train when the workers were started with different `settings` ({flag: value},
    e.g. the steps): one collective compares them before the first step.

    Otherwise the worker with fewer steps finishes and leaves, and the others fail at their
    next step with a lost-worker error that hides the cause. The values are summed, and their
    squares summed, over all replicas: they are equal everywhere exactly when
    n * sum(v^2) == sum(v)^2. Every worker sees the same sums, so every worker stops.
    """
    names = list(settings)
    own = tf.constant([float(settings[n]) for n in names], tf.float64)

    @tf.function
    def sums():
        context = tf.distribute.get_replica_context()
        return (context.all_reduce(tf.distribute.ReduceOp.SUM, own),
                context.all_reduce(tf.distribute.ReduceOp.SUM, own * own))

    total, squares = (strategy.experimental_local_results(x)[0].numpy() for x in strategy.run(sums))
    count = strategy.num_replicas_in_sync
    differ = [f"{name} {settings[name]} here, {total[i] / count:g} on average"
              for i, name in enumerate(names) if count * squares[i] != total[i] ** 2]
    if differ:
        raise UserError(f"{describe}: the workers were started with different settings: {'; '.join(differ)}. "
                        "Start every worker with the same command (and config), apart from --task-index")


def remove_worker_dirs(model_dir: str, role) -> None:
    """Remove a non-chief worker's copies in MODEL_DIR and MODEL_DIR/train, named as
    `model_lib_v2.get_filepath` names them; the OD API removes them itself only when training
    ends normally. Nothing for the chief, whose folders they are."""
    if role.is_chief:
        return
    import tensorflow as tf  # loaded already: only a training worker gets here
    for folder in (model_dir, f"{model_dir.rstrip('/')}/train"):
        path = f"{folder}/temp_worker_{role.task_index:03d}"
        with contextlib.suppress(tf.errors.OpError):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)


def train_files(tf, config) -> List[str]:
    """The train TFRecord files the config's input paths match (globs expanded)."""
    paths = config.train_input_reader.tf_record_input_reader.input_path
    return sorted({f for pattern in paths for f in tf.io.gfile.glob(pattern)})


def sharding(files: int, workers: int) -> str:
    """"file" (the OD API's own, when every worker gets the same number of files) or "example"."""
    return "file" if files and files % workers == 0 else "example"


def input_sharding(tf, config, workers: int) -> str:
    """`sharding` for the config's train input. With `sample_from_datasets_weights` (`config
    --positive-fraction`) the OD API reads each input_path entry as its own dataset and shards
    each one's files by itself, so 'file' needs every entry's file count to be a multiple of the
    workers; else a worker would get no positive (or no negative) file and silently train on
    another mix."""
    reader = config.train_input_reader
    if not reader.sample_from_datasets_weights:
        return sharding(len(train_files(tf, config)), workers)
    counts = [len(tf.io.gfile.glob(p)) for p in reader.tf_record_input_reader.input_path]
    return "file" if all(sharding(n, workers) == "file" for n in counts) else "example"


class _ByExample:
    """Stands in for the OD API's filename shard function; read by `_read_dataset`."""

    def __init__(self, input_context):
        self.count = input_context.num_input_pipelines
        self.index = input_context.input_pipeline_id


@contextlib.contextmanager
def shard_by_example() -> Iterator[None]:
    """While active, the OD API's `dataset_builder` gives input pipeline i of N the records
    i, i+N, ... of every file instead of the files i, i+N, ...

    `dataset_builder.build` looks both functions up in its module when it runs, so replacing
    them there is enough; they are restored on exit.
    """
    from object_detection.builders import dataset_builder
    original_shard, original_read = dataset_builder.shard_function_for_context, dataset_builder.read_dataset

    def shard_function_for_context(input_context):
        return None if input_context is None else _ByExample(input_context)

    def read_dataset(file_read_func, input_files, config, filename_shard_fn=None):
        if isinstance(filename_shard_fn, _ByExample):
            count, index = filename_shard_fn.count, filename_shard_fn.index

            def read_share(filename):
                return file_read_func(filename).shard(count, index)
            return original_read(read_share, input_files, config, filename_shard_fn=None)
        return original_read(file_read_func, input_files, config, filename_shard_fn=filename_shard_fn)

    dataset_builder.shard_function_for_context = shard_function_for_context
    dataset_builder.read_dataset = read_dataset
    try:
        yield
    finally:
        dataset_builder.shard_function_for_context = original_shard
        dataset_builder.read_dataset = original_read


def _peers(text: str, own: Optional[str] = None) -> List[str]:
    """The other tasks ("worker 1") a TensorFlow error message names, without `own` ("worker 0")
    or, when not given, the task whose device the failing op ran on (".../task:0/device:CPU:0")."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)  # TF's "{{function_node ...}}" prefix
    if own is None:
        device = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)/device", text)
        own = f"{device.group(1)} {device.group(2)}" if device else None
    tasks = {f"{job} {index}" for job, index in re.findall(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", text)}
    return sorted(tasks - {own})


def lost_worker_error(error, model_dir: str, latest_step: int) -> UserError:
    """The message for a collective aborted because a peer went away: which task, and what now."""
    tasks = _peers(str(error))
    if tasks:
        what = f"{', '.join(tasks)} stopped answering ({type(error).__name__})"
    else:
        text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(error))
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
        what = f"a worker left the cluster or cannot be reached ({type(error).__name__}: {first[:200]})"
    return UserError(f"multi-worker training stopped: {what}. The chief's latest checkpoint in {model_dir} is "
                     f"step {latest_step}; start every worker again with the same command to resume from it "
                     "(MODEL_DIR must be one folder or bucket that every worker reads)")
