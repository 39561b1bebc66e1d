"""Training runs in a subprocess: the latest checkpoint's step, and a run killed and resumed."""
import os

import pytest

from . import REPO


def saved_step(model_dir):
    """Step of the latest checkpoint in model_dir, -1 when there is none (yet)."""
    from medtfod.odapi.evaluate import checkpoint_step
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    latest = tf.train.latest_checkpoint(model_dir)
    return checkpoint_step(latest) if latest else -1


def train_killed_and_resumed(config, model_dir, steps, every, log_path, timeout=600, extra=(), ready=None):
    """Run `python -m medtfod train` in a subprocess with `--checkpoint-every-n every` (and the
    `extra` arguments), SIGKILL it as soon as `ready(model_dir)` is true (default: a checkpoint
    of step >= `every` exists), then run the same command again.

    The first run's output goes to `log_path`; the test fails when that run ends (or `timeout`
    seconds pass) before it could be killed.

    Returns:
      {'killed': the first run's exit status, 'saved': the latest checkpoint's step after the
       kill, 'returncode': the second run's exit status, 'output': its stdout and stderr,
       'reported': the steps the second run reported (the OD API logs each block of 100 it
       runs), 'final': the latest checkpoint's step after it}.
    """
    import re
    import subprocess
    import sys
    import time

    from medtfod.core.errors import UserError

    command = [sys.executable, "-m", "medtfod", "train", "--config", config, "--model-dir", model_dir,
               "--steps", str(steps), "--checkpoint-every-n", str(every), "-v", *extra]  # -v: the OD API's lines
    ready = ready or (lambda folder: saved_step(folder) >= every)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None:
                try:
                    if ready(model_dir):
                        break
                except UserError:  # caught between the index and the data file: look again
                    pass
                time.sleep(0.2)
            if proc.poll() is not None or time.time() >= deadline:
                with open(log_path, errors="replace") as f:
                    pytest.fail(f"training finished, failed or timed out before it could be killed "
                                f"(exit status {proc.poll()}):\n{f.read()[-3000:]}")
            proc.kill()
        finally:
            proc.kill()
            proc.wait()
    saved = saved_step(model_dir)
    again = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
    output = again.stdout.decode(errors="replace")
    return {"killed": proc.returncode, "saved": saved, "returncode": again.returncode, "output": output,
            "reported": [int(s) for s in re.findall(r"Step (\d+) per-step time", output)],
            "first_output": open(log_path, errors="replace").read(),
            "final": saved_step(model_dir)}
