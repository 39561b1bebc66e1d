"""Multi-worker training for real: two `medtfod train` processes on 127.0.0.1 with
MultiWorkerMirroredStrategy, on the trained fixture's one-shard data set and tiny SSD config."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from support.cli import medtfod, medtfod_script
from support.training import saved_step

pytestmark = pytest.mark.slow

LOSS = re.compile(r"Step (\d+) per-step time.*?'Loss/total_loss':\s*(?:np\.float\d+\()?([-0-9.eE+]+)", re.S)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_worker(config, model_dir, hosts, index, log, *extra):
    """`medtfod train ... --cluster HOSTS --task-index INDEX` through the console script; -v shows
    the OD API's step and loss reports, which both workers log."""
    return subprocess.Popen([medtfod_script(), "train", "--config", config, "--model-dir", model_dir,
                             "--cluster", ",".join(hosts), "--task-index", str(index), "-v", *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(log.name))


def test_two_workers_train_in_lockstep_and_the_chiefs_checkpoint_evaluates(trained, tmp_path):
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    model = str(tmp_path / "model")
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in (0, 1)]
    workers = [start_worker(trained["config"], model, hosts, i, logs[i], "--steps", "200") for i in (0, 1)]
    try:
        codes = [w.wait(timeout=1200) for w in workers]
    finally:
        for w in workers:
            w.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)

    # The data set has one train shard for two workers: sharded by example, not by file (with
    # file sharding worker 1 got no input and both failed at the first step).
    assert all("input sharded by example" in o and "global batch 4 = 2 per replica x 2 replicas" in o
               for o in outputs)
    # Lockstep: both ran the same steps, and the total loss each reports (reduced over all
    # replicas of both workers) is the same number.
    losses = [[(int(step), float(loss)) for step, loss in LOSS.findall(o)] for o in outputs]
    assert [s for s, _ in losses[0]] == [100, 200] == [s for s, _ in losses[1]], losses
    assert [v for _, v in losses[0]] == pytest.approx([v for _, v in losses[1]], rel=1e-6)
    assert all(loss == loss and loss < 1e3 for _, loss in losses[0])

    # Only the chief wrote into MODEL_DIR: its checkpoints (step 200), one train events file
    # whose losses are the ones logged, its log; worker 1's temporary folders are removed.
    assert saved_step(model) == 200
    files = [os.path.relpath(os.path.join(d, f), model) for d, _, fs in os.walk(model) for f in fs]
    assert not [f for f in files if "temp_worker" in f], files
    assert len([f for f in files if f.startswith("train" + os.sep)]) == 1, files
    assert "medtfod.log" in files and "training done (worker 1 (not the chief" in outputs[1]
    from medtfod.training.history import read_history
    series = read_history(model)["train"]["Loss/total_loss"]
    assert [s for s, _ in series] == [100, 200]
    assert [v for _, v in series] == pytest.approx([v for _, v in losses[0]], rel=1e-5)

    # The chief's checkpoint restores and evaluates on one machine.
    medtfod("eval", "--config", trained["config"], "--model-dir", model, "-q")
    with open(os.path.join(model, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 200
    assert 0.0 <= metrics["metrics"]["DetectionBoxes_Precision/mAP@.50IOU"] <= 1.0


def test_a_killed_worker_stops_the_other_with_a_clear_error_in_bounded_time(trained, tmp_path):
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    model = str(tmp_path / "model")
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in (0, 1)]
    chief, worker = [start_worker(trained["config"], model, hosts, i, logs[i], "--steps", "1000") for i in (0, 1)]
    try:
        deadline = time.time() + 300
        while time.time() < deadline and chief.poll() is None:  # the cluster has formed
            if "global batch" in open(logs[0].name).read():
                break
            time.sleep(0.5)
        assert chief.poll() is None, open(logs[0].name).read()[-3000:]
        time.sleep(5)  # into the first steps
        # SIGTERM (what Kubernetes sends; TensorFlow's own preemption handler would swallow it)
        # ends the worker at once, though it is inside TensorFlow's C++ for a block of 100 steps.
        worker.send_signal(signal.SIGTERM)
        killed = time.time()
        worker_code = worker.wait(timeout=30)
        worker_took = time.time() - killed
        code = chief.wait(timeout=180)
        took = time.time() - killed
    finally:
        chief.kill()
        worker.kill()
    output, worker_output = open(logs[0].name).read(), open(logs[1].name).read()
    assert (worker_code, worker_took < 10) == (143, True), (worker_took, worker_output[-3000:])
    assert "medtfod: interrupted: worker 1 (not the chief" in worker_output
    assert not [d for d, _, _ in os.walk(model) if "temp_worker" in d]  # worker 1's own, removed
    assert code == 1, output[-3000:]
    assert took < 90, f"the chief took {took:.0f} s to stop"
    assert re.search(r"medtfod: error: multi-worker training stopped: worker 1 stopped answering", output), \
        output[-3000:]
    assert "Traceback" not in output + worker_output


def test_a_worker_whose_peers_never_come_gives_up_after_the_cluster_timeout(trained, tmp_path):
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    began = time.time()
    result = medtfod("train", "--config", trained["config"], "--model-dir", tmp_path / "model",
                     "--cluster", ",".join(hosts), "--task-index", "0", "--cluster-timeout", "5",
                     check=False, timeout=120)
    assert result.returncode == 1
    assert time.time() - began < 60
    assert "not every worker joined within 5 s (--cluster-timeout); missing: worker 1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_ctrl_c_while_waiting_for_the_cluster_stops_at_once(trained, tmp_path):
    # Joining the cluster blocks inside TensorFlow with the GIL held: Ctrl-C used to wait for
    # --cluster-timeout and then print a traceback.
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    log = open(tmp_path / "worker0.log", "w+")
    process = start_worker(trained["config"], str(tmp_path / "model"), hosts, 0, log, "--cluster-timeout", "300")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and "waiting up to 300 s" not in open(log.name).read():
            assert process.poll() is None, open(log.name).read()[-3000:]
            time.sleep(0.2)
        time.sleep(2)  # inside the wait
        process.send_signal(signal.SIGINT)
        sent = time.time()
        code = process.wait(timeout=60)
        took = time.time() - sent
    finally:
        process.kill()
    output = open(log.name).read()
    assert code in (-signal.SIGINT, 128 + signal.SIGINT), output[-3000:]
    assert took < 10, f"{took:.0f} s"
    assert "Traceback" not in output


def test_workers_started_with_different_steps_refuse_to_train(trained, tmp_path):
    # Otherwise the one with fewer steps finishes and the other fails at its next step with
    # "worker 0 stopped answering", which hides the cause.
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    model = str(tmp_path / "model")
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in (0, 1)]
    workers = [start_worker(trained["config"], model, hosts, i, logs[i], "--steps", str(steps))
               for i, steps in ((0, 200), (1, 300))]
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    outputs = [open(log.name).read() for log in logs]
    assert codes == [1, 1], outputs
    for output, steps in zip(outputs, (200, 300)):
        assert f"the workers were started with different settings: --steps {steps} here, 250 on average" in output
        assert "Traceback" not in output
    assert saved_step(model) == -1  # no step was trained
