"""Re-create the hash-pinned lock files from the *.in files (a maintainer's tool; needs uv).

    python requirements/lock.py   # cpu, gpu, odapi, test, annotate, dicom, runtime-onnx and beam .txt
    python requirements/lock.py --check-windows   # also prove cpu.txt resolves for win_amd64

Users never run this: scripts/bootstrap.py installs from the committed lock files with
`pip --require-hashes`. The locks are universal (markers for Windows/Linux), for Python 3.11.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_lock(src, out, *extra):
    cmd = ["uv", "pip", "compile", "--universal", "--python-version", "3.11", "--generate-hashes",
           "--quiet", "--no-header", os.path.join(HERE, src), "-o", os.path.join(HERE, out), *extra]
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=HERE)


def check_windows(lock):
    """Download every wheel of `lock` for win_amd64 / CPython 3.11 (fails if one is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
               "--only-binary=:all:", "--platform", "win_amd64", "--python-version", "3.11",
               "--implementation", "cp", "-d", tmp, "-r", os.path.join(HERE, lock)]
        print("+", " ".join(cmd))
        subprocess.run(cmd, check=True)
        print(f"{lock}: {len(os.listdir(tmp))} wheels resolve for win_amd64")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-windows", action="store_true")
    args = parser.parse_args()
    overrides = ["--override", os.path.join(HERE, "overrides.txt")]
    compile_lock("runtime.in", "cpu.txt", *overrides)
    with open(os.path.join(HERE, "runtime.in")) as f:
        gpu = f.read().replace("tensorflow==", "tensorflow[and-cuda]==", 1)
    gpu_in = os.path.join(HERE, "gpu.in")  # runtime.in with the CUDA extra; not kept
    with open(gpu_in, "w") as f:
        f.write(gpu)
    try:
        compile_lock("gpu.in", "gpu.txt", *overrides)
    finally:
        os.unlink(gpu_in)
    compile_lock("odapi.in", "odapi.txt", "--no-deps")
    compile_lock("test.in", "test.txt", "-c", os.path.join(HERE, "cpu.txt"))
    compile_lock("annotate.in", "annotate.txt", "-c", os.path.join(HERE, "cpu.txt"))
    compile_lock("dicom.in", "dicom.txt", "-c", os.path.join(HERE, "cpu.txt"))
    # the light inference install (bootstrap.py install --runtime): no TensorFlow, same pins as cpu.txt
    compile_lock("runtime-onnx.in", "runtime-onnx.txt", "-c", os.path.join(HERE, "cpu.txt"))
    # beam.txt is separate, not an extra lock on top of cpu.txt like the two above: apache-beam
    # 2.77.0 requires protobuf<7, pillow<13 and python-dateutil<3, which cpu.txt's pins break, so
    # `-c cpu.txt` cannot resolve. Seeded with a copy of cpu.txt, uv keeps every other pin as it is
    # there and moves only those three (bootstrap.py install --beam installs it instead of cpu.txt).
    shutil.copy(os.path.join(HERE, "cpu.txt"), os.path.join(HERE, "beam.txt"))
    compile_lock("beam.in", "beam.txt", *overrides)
    if args.check_windows:
        check_windows("cpu.txt")
        check_windows("test.txt")
        check_windows("annotate.txt")
        check_windows("dicom.txt")
        check_windows("runtime-onnx.txt")
        check_windows("beam.txt")


if __name__ == "__main__":
    main()
