"""Multi-worker roles (TF_CONFIG), the train input's sharding by example, and the cluster errors.

The 2-process training runs are in test_multiworker.py (slow)."""
import json

import pytest

from medtfod.training import cluster
from medtfod.core.errors import UserError


def test_tf_config_of_the_cluster_flag_round_trips_to_a_role():
    hosts = cluster.parse_hosts(" 10.0.0.1:2222, 10.0.0.2:2222 ,")
    assert hosts == ["10.0.0.1:2222", "10.0.0.2:2222"]
    for index in (0, 1):
        value = cluster.tf_config(hosts, index)
        assert json.loads(value) == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        role = cluster.role_from_env({"TF_CONFIG": value})
        assert (role.workers, role.rank, role.is_chief) == (2, index, index == 0)
    assert cluster.role_from_env({}) is None
    assert cluster.role_from_env({"TF_CONFIG": "  "}) is None


def test_a_chief_job_as_vertex_ai_and_kubeflow_write_it():
    spec = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}}
    chief = cluster.role_from_env({"TF_CONFIG": json.dumps(dict(spec, task={"type": "chief", "index": 0}))})
    worker = cluster.role_from_env({"TF_CONFIG": json.dumps(dict(spec, task={"type": "worker", "index": 1}))})
    assert (chief.workers, chief.rank, chief.is_chief) == (3, 0, True)
    assert (worker.workers, worker.rank, worker.is_chief) == (3, 2, False)  # worker 0 is not the chief here
    assert "worker 1 (not the chief; 3 workers in all)" == worker.describe()


@pytest.mark.parametrize("text, expected", [
    ("", "HOST:PORT,HOST:PORT"),
    ("10.0.0.1", "is not HOST:PORT"),
    ("10.0.0.1:http", "is not HOST:PORT"),
    ("10.0.0.1:70000", "is not HOST:PORT"),
    ("a:1,b:2,a:1", "a:1 more than once"),
    ("127.0.0.1:2222,localhost:2222", "the same port on the same machine"),
])
def test_bad_cluster_flags_are_named(text, expected):
    with pytest.raises(UserError, match=expected):
        cluster.parse_hosts(text)


def test_a_task_index_outside_the_cluster_is_refused():
    with pytest.raises(UserError, match="give 0 to 1"):
        cluster.tf_config(["a:1", "b:2"], 2)


@pytest.mark.parametrize("value, expected", [
    ("{not json", "TF_CONFIG is not valid"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}', "parameter-server"),
    ('{"cluster": {"worker": ["a:1"], "evaluator": ["e:1"]}, "task": {"type": "evaluator", "index": 0}}',
     "medtfod eval"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "worker 3 is not in its cluster"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "2 chiefs"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "master", "index": 0}}', "task type 'master'"),
    ('{"cluster": {"worker": "a:1,b:1"}, "task": {"type": "worker", "index": 0}}', "give a list of"),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
])
def test_tf_config_problems_say_what_to_change(value, expected):
    with pytest.raises(UserError, match=expected):
        cluster.role_from_env({"TF_CONFIG": value})


def test_one_machine_with_the_same_port_elsewhere_is_fine():
    assert cluster.parse_hosts("127.0.0.1:2222,localhost:2223") == ["127.0.0.1:2222", "localhost:2223"]


def test_a_blank_tf_config_means_one_machine_even_to_tensorflow(monkeypatch):
    # `TF_CONFIG= medtfod train`: TensorFlow's MirroredStrategy parses a set TF_CONFIG as JSON.
    import os
    monkeypatch.setenv("TF_CONFIG", " ")
    cluster.drop_blank_tf_config()
    assert "TF_CONFIG" not in os.environ
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    cluster.drop_blank_tf_config()
    assert os.environ["TF_CONFIG"] == '{"cluster": {}}'


def _role(tmp_path, *extra):
    """The role `medtfod train ... EXTRA` gets, through the CLI's own parser."""
    from medtfod.cli import build_parser
    config = tmp_path / "pipeline.config"
    config.write_text("")
    args = build_parser().parse_args(["train", "--config", str(config), "--model-dir", str(tmp_path / "m"), *extra])
    return cluster.role_from_flags(args.cluster, args.task_index, args.num_workers)


@pytest.mark.parametrize("extra, expected", [
    (["--num-workers", "2"], "no cluster is given"),
    (["--cluster", "a:1,b:2"], "go together"),
    (["--task-index", "1"], "go together"),
    (["--cluster", "a:1,b:2", "--task-index", "0", "--num-workers", "3"], "the cluster has 2 workers"),
])
def test_the_train_flags_are_checked_before_tensorflow_loads(tmp_path, monkeypatch, extra, expected):
    monkeypatch.setenv("TF_CONFIG", "")  # unset for medtfod, and restored (removed) afterwards
    with pytest.raises(UserError, match=expected):
        _role(tmp_path, *extra)


def test_the_cluster_flag_sets_tf_config_for_the_process_and_refuses_a_second_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")  # unset for medtfod, and restored (removed) afterwards
    role = _role(tmp_path, "--cluster", "a:1,b:2", "--task-index", "1", "--num-workers", "2")
    assert (role.rank, role.workers) == (1, 2)
    assert json.loads(__import__("os").environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}
    with pytest.raises(UserError, match="already set"):
        _role(tmp_path, "--cluster", "a:1,b:2", "--task-index", "0")


def test_global_batch_must_split_evenly_over_the_replicas():
    from medtfod.odapi import multiworker
    multiworker.check_batch(8, 4, 2)
    with pytest.raises(UserError, match=r"batch_size 6 is the global batch.*4 replicas \(2 workers x 2 device.*"
                                        r"--batch-size 8"):
        multiworker.check_batch(6, 4, 2)


def test_sharding_by_file_only_when_every_worker_gets_as_many_files():
    from medtfod.odapi.multiworker import sharding
    assert [sharding(files, 2) for files in (0, 1, 2, 3, 4)] == ["example", "example", "file", "example", "file"]
    assert sharding(1, 1) == "file"


def _records(tf, dataset):
    return [bytes(r.numpy()) for r in dataset]


@pytest.mark.parametrize("sizes, workers", [((7,), 2), ((7,), 3), ((5, 4), 3), ((3, 2, 2), 2)])
def test_sharding_by_example_gives_each_worker_a_disjoint_share_of_every_file(tmp_path, sizes, workers):
    """Through the OD API's own `dataset_builder.read_dataset` and input-context shard function:
    the workers' shares are disjoint and together are the data set, also with fewer files than
    workers (where the OD API's file sharding leaves a worker with nothing)."""
    import functools

    from medtfod.odapi import multiworker
    from medtfod.odapi.runtime import import_tensorflow
    from medtfod.data.tfrecord_framing import write_record
    tf = import_tensorflow(verbose=False)  # with the compatibility fixes the OD API needs
    from object_detection.builders import dataset_builder
    from object_detection.protos import input_reader_pb2

    files, everything = [], []
    for f, size in enumerate(sizes):
        path = str(tmp_path / f"train.record-{f:05d}-of-{len(sizes):05d}")
        with open(path, "wb") as out:
            for i in range(size):
                record = f"file {f} record {i}".encode()
                write_record(out, record)
                everything.append(record)
        files.append(path)
    config = input_reader_pb2.InputReader(shuffle=False, num_epochs=1, num_readers=1)
    read = functools.partial(tf.data.TFRecordDataset, buffer_size=1000)

    def shares():
        out = []
        for index in range(workers):
            context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=index)
            shard_fn = dataset_builder.shard_function_for_context(context)
            out.append(_records(tf, dataset_builder.read_dataset(read, files, config, filename_shard_fn=shard_fn)))
        return out

    by_file = shares()  # the OD API's own behaviour, for contrast
    with multiworker.shard_by_example():
        by_example = shares()
    restored = shares()

    assert sorted(r for share in by_example for r in share) == sorted(everything)  # disjoint, and all of it
    assert [len(share) for share in by_example] == [sum(len(range(i, size, workers)) for size in sizes)
                                                    for i in range(workers)]  # records i, i+N, ... of each file
    assert restored == by_file  # the OD API's functions are put back
    if len(sizes) < workers:
        assert [] in by_file  # what broke 2-worker training on a one-shard data set


def test_a_lost_peer_and_a_missing_peer_are_named():
    from medtfod.odapi.multiworker import _peers, lost_worker_error

    class UnavailableError(Exception):
        pass
    aborted = UnavailableError(
        "{{function_node __wrapped__CollectiveBcastSend_device_/job:worker/replica:0/task:0/device:CPU:0}} "
        "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
        "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
    message = str(lost_worker_error(aborted, "/runs/m", 300))
    assert message.startswith("multi-worker training stopped: worker 1 stopped answering (UnavailableError)")
    assert "latest checkpoint in /runs/m is step 300" in message
    assert "a worker left the cluster" in str(lost_worker_error(UnavailableError("socket closed"), "/m", 0))
    barrier = ("Barrier timed out. # of tasks that reached the barrier: 1/3. The first task at the barrier: "
               "/job:worker/replica:0/task:0. Some timed out task names:\n/job:worker/replica:0/task:2\n"
               "/job:worker/replica:0/task:1")
    assert _peers(barrier, own="worker 0") == ["worker 1", "worker 2"]


INTERRUPTED = r"""
import signal, sys, time
from medtfod.training.cluster import exit_on_interrupt
with exit_on_interrupt(lambda: "stopped here"):
    # The main thread cannot take the signal (as when it is inside TensorFlow's C++, its
    # Python handler would wait for the call to return): only the watcher can end the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="POSIX signal masks")
@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_ends_a_worker_at_once_even_while_python_cannot_run(signame, code):
    import signal
    import subprocess
    import sys
    import time
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "ready\n"
    sent = time.time()
    process.send_signal(getattr(signal, signame))
    _, err = process.communicate(timeout=30)
    assert process.returncode == code
    assert time.time() - sent < 10
    assert err.count("medtfod: stopped here") == 1, err


def test_the_signal_handlers_are_restored_afterwards():
    import signal
    before = signal.getsignal(signal.SIGINT)
    with cluster.exit_on_interrupt(lambda: "x"), cluster.default_signals():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind
