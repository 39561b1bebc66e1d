"""Set up medtfod in a virtual environment and run the demo or the tests: the README's two commands.

    python3 scripts/bootstrap.py demo      (Windows: py -3.11 scripts\\bootstrap.py demo)
    python3 scripts/bootstrap.py test      (Windows: py -3.11 scripts\\bootstrap.py test)
    python3 scripts/bootstrap.py install [--gpu] [--annotate] [--dicom] [--beam]
    python3 scripts/bootstrap.py install --runtime      (the light inference install, no TensorFlow)

Needs only Python 3.11 (3.12 and 3.13 also resolve) and access to PyPI. Creates `.venv/`
beside this repository (or $MEDTFOD_VENV), installs the hash-pinned locks in requirements/
with `pip --require-hashes --no-deps` (the OD API must not pull its declared dependencies),
installs medtfod itself in editable mode, then runs `medtfod demo` or `pytest`. Re-running
skips the install while the locks are unchanged. `--annotate` adds labelImg and PyQt5 (`medtfod
annotate`; the test install always has them, for the annotation tests). `--dicom` adds highdicom
(`detect --dicom-sr / --dicom-overlay`; the test install always has it). `--beam` installs
requirements/beam.txt instead of cpu.txt: the same pins plus apache-beam 2.77.0, with protobuf 6,
pillow 12 and python-dateutil 2 (apache-beam's bounds), for `medtfod convert --runner ...`; give
it its own MEDTFOD_VENV to keep a cpu.txt environment beside it. `install --runtime` installs only
requirements/runtime-onnx.txt (ONNX Runtime, numpy, Pillow, pydicom, pycocotools, matplotlib,
ensemble-boxes; no TensorFlow, no OD API): `medtfod detect --runtime onnx` on an export made with
`export --onnx`, plus metrics and report; give it its own MEDTFOD_VENV (e.g. .venv-runtime).
Extra arguments go to medtfod demo / pytest.
Standard library only, so it runs before anything is installed.
"""
import hashlib
import os
import subprocess
import sys
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ = os.path.join(ROOT, "requirements")
STAMP = "medtfod-install.sha256"


def venv_dir() -> str:
    return os.environ.get("MEDTFOD_VENV") or os.path.join(ROOT, ".venv")


def venv_python(path: str) -> str:
    if os.name == "nt":
        return os.path.join(path, "Scripts", "python.exe")
    return os.path.join(path, "bin", "python")


def lock_files(gpu: bool, test: bool, annotate: bool = False, beam: bool = False, dicom: bool = False,
               runtime: bool = False):
    if runtime:  # the light ONNX Runtime install: one lock, no TensorFlow, no OD API
        return [os.path.join(REQ, "runtime-onnx.txt")]
    files = ["gpu.txt" if gpu else "beam.txt" if beam else "cpu.txt", "odapi.txt"]
    if test:
        files.append("test.txt")
    if test or annotate:
        files.append("annotate.txt")
    if test or dicom:
        files.append("dicom.txt")
    return [os.path.join(REQ, f) for f in files]


def fingerprint(files) -> set:
    """One `name sha256` line per lock file (and setup.cfg): what an install is made of."""
    lines = set()
    for path in files + [os.path.join(ROOT, "setup.cfg")]:
        with open(path, "rb") as f:
            lines.add(f"{os.path.basename(path)} {hashlib.sha256(f.read()).hexdigest()}")
    return lines


def run(cmd) -> None:
    print("+ " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bootstrap: command failed with exit status {result.returncode}: {' '.join(cmd)}")


def install(gpu: bool = False, test: bool = False, annotate: bool = False, beam: bool = False,
            dicom: bool = False, runtime: bool = False) -> str:
    """Create/refresh the environment; returns its Python."""
    if sys.version_info < (3, 11):
        sys.exit(f"bootstrap: medtfod needs Python 3.11 or newer; this is {sys.version.split()[0]} "
                 "(on Windows: py -3.11 scripts\\bootstrap.py ...)")
    if gpu and os.name == "nt":
        sys.exit("bootstrap: TensorFlow has no native Windows GPU build after 2.10; use WSL2 for --gpu")
    if gpu and beam:
        sys.exit("bootstrap: --beam has a CPU lock only (requirements/beam.txt); Beam's conversion needs no GPU, "
                 "so install it in an environment of its own (MEDTFOD_VENV=.venv-beam ... install --beam)")
    if dicom and beam:
        sys.exit("bootstrap: requirements/dicom.txt is locked against cpu.txt (pillow 13), beam.txt holds pillow 12; "
                 "install --dicom in an environment of its own, without --beam")
    if runtime and (gpu or test or annotate or beam or dicom):
        sys.exit("bootstrap: --runtime is the light inference install (ONNX Runtime, no TensorFlow) and takes no "
                 "other option; run it with `install --runtime` only, in its own MEDTFOD_VENV")
    target = venv_dir()
    python = venv_python(target)
    files = lock_files(gpu, test, annotate, beam, dicom, runtime)
    want = fingerprint(files)
    stamp = os.path.join(target, STAMP)
    if os.path.isfile(python) and os.path.isfile(stamp):
        with open(stamp) as f:  # an install with the test lock also serves the demo
            if want <= set(f.read().splitlines()):
                return python
    if not os.path.isfile(python):
        print(f"creating virtual environment {target}", flush=True)
        venv.EnvBuilder(with_pip=True).create(target)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    requirements = [arg for f in files for arg in ("-r", f)]
    run(pip + ["--require-hashes", "--no-deps"] + requirements)
    run(pip + ["--no-deps", "--no-build-isolation", "-e", ROOT])
    with open(stamp, "w") as f:
        f.write("\n".join(sorted(want)) + "\n")
    return python


def main(argv) -> int:
    if not argv or argv[0] not in ("demo", "test", "install"):
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    gpu, annotate, beam, dicom = "--gpu" in rest, "--annotate" in rest, "--beam" in rest, "--dicom" in rest
    runtime = "--runtime" in rest
    rest = [a for a in rest if a not in ("--gpu", "--annotate", "--beam", "--dicom", "--runtime")]
    if runtime and verb != "install":
        sys.exit("bootstrap: --runtime goes with install (the demo and the tests need TensorFlow)")
    python = install(gpu=gpu, test=(verb == "test"), annotate=annotate, beam=beam, dicom=dicom, runtime=runtime)
    if verb == "install":
        print(f"medtfod is installed in {venv_dir()}; run it as {python} -m medtfod --help")
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if verb == "demo":
        cmd = [python, "-m", "medtfod", "demo"] + rest
    else:
        cmd = [python, "-m", "pytest"] + rest
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
