"""Running the installed `medtfod` console script in a fresh process, and checking that a
command writes only its declared outputs (`fenced`)."""
import os

import pytest


def medtfod_script():
    """The installed `medtfod` console script of the Python running the tests."""
    import shutil
    import sys
    script = shutil.which("medtfod", path=os.path.dirname(sys.executable))
    if not script:
        pytest.fail(f"the medtfod console script is not installed beside {sys.executable}; "
                    "run python3 scripts/bootstrap.py install")
    return script


def medtfod(*args, check=True, timeout=900, **kwargs):
    """Run `medtfod ARGS...` through the installed console script in a fresh process.

    Returns the CompletedProcess (text stdout and stderr); with `check`, a non-zero exit fails
    the test and shows the end of its output."""
    import subprocess
    result = subprocess.run([medtfod_script(), *[str(a) for a in args]], capture_output=True, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"medtfod {' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def tree(root):
    """{relative path: sha256} of every file under `root`."""
    import hashlib
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def fenced(root, outputs, *args, keep=(), **kwargs):
    """`medtfod ARGS` (see `medtfod`) run from an empty folder under `root`; then check that
    every file it added or changed under `root` lies inside one of `outputs` (folders or files,
    relative to `root`) and that no other file changed, inputs included, nor any of `keep`
    (inputs that live inside an output folder, e.g. a model folder's pipeline.config).
    Returns the result."""
    cwd = os.path.join(root, "cwd")
    os.makedirs(cwd, exist_ok=True)
    before = tree(root)
    result = medtfod(*args, cwd=cwd, **kwargs)
    after = tree(root)
    touched = sorted(p for p in after if before.get(p) != after[p]) + sorted(set(before) - set(after))
    allowed = [os.path.normpath(o) for o in outputs]
    stray = [p for p in touched if not any(p == o or p.startswith(o + os.sep) for o in allowed)]
    stray += [p for p in touched if p in {os.path.normpath(k) for k in keep}]
    assert not stray, f"medtfod {args[0]} wrote, changed or removed outside {outputs}: {stray[:10]}"
    return result
