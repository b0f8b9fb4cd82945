"""show_config(): what this build is and what it runs with."""

import os
import platform
import sys
from typing import Optional, TextIO

import numpy as np

from fastopt import _core


def _openmp_runtime():
    """The OpenMP library fastopt's calls go to, and any other one loaded in this process.

    The file comes from the dynamic linker (``_core.openmp_library``): with two
    runtimes loaded, say a wheel's own libgomp beside torch's, it tells which
    one serves fastopt.  threadpoolctl adds the runtime's name and version.
    """
    used_path = _core.openmp_library()
    try:
        from threadpoolctl import threadpool_info
        loaded = [i for i in threadpool_info() if i.get("user_api") == "openmp"]
    except ImportError:
        loaded = []
    used = [i for i in loaded if used_path and _same_file(i.get("filepath"), used_path)]
    others = [_describe(i) for i in loaded if i not in used]
    text = _describe(used[0]) if used else (used_path or "unknown")
    return text + (f"; also loaded: {'; '.join(others)}" if others else "")


def _same_file(a, b):
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _describe(info):
    name = info.get("prefix") or info.get("internal_api")
    version = info.get("version")
    return f"{name}{' ' + version if version else ''} ({info.get('filepath')})"


def _idle_wait():
    """How OpenMP's idle threads wait, as set in the environment (fastopt/__init__.py)."""
    import fastopt

    policy = os.environ.get("OMP_WAIT_POLICY")
    spin = os.environ.get("GOMP_SPINCOUNT")
    if policy is not None:
        return f"OMP_WAIT_POLICY={policy}"
    if spin == fastopt.DEFAULT_GOMP_SPINCOUNT:
        return (f"GOMP_SPINCOUNT={spin} (set by fastopt at import; libgomp reads it when it loads, so it "
                f"applies unless an OpenMP runtime was loaded before fastopt)")
    return f"GOMP_SPINCOUNT={spin}" if spin is not None else "the runtime's default"


def config():
    """The facts show_config() prints, as a dict."""
    from fastopt import __version__

    build = _core.build_info()
    return {
        "fastopt": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "compiler": build["compiler"],
        "compile_args": build["compile_args"],
        "openmp": build["openmp"],
        "openmp_runtime": _openmp_runtime() if build["openmp"] else "none (serial build)",
        "num_threads": _core.get_num_threads(),
        "openmp_idle_wait": _idle_wait(),
        "simd_level": _core.get_simd_level(),
        "simd_levels": ", ".join(f"{k}{'' if ok else ' (not on this CPU)'}"
                                 for k, ok in _core.simd_levels().items()),
    }


def show_config(file: Optional[TextIO] = None) -> None:
    """Print versions, compiler and flags, OpenMP and its runtime, threads and SIMD level."""
    facts = config()
    width = max(map(len, facts))
    for key, value in facts.items():
        if key == "openmp":
            value = "enabled" if value else "DISABLED: serial build, one thread"
        print(f"{key:<{width}} : {value}", file=file or sys.stdout)


def main(args):
    """``python -m fastopt config``."""
    show_config()
