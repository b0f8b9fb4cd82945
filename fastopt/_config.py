"""show_config(): what this build is and what it runs with."""

import platform
import sys

import numpy as np

from fastopt import _core


def _openmp_runtime():
    """The OpenMP library loaded in this process, as threadpoolctl finds it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "openmp"]
    if not libs:
        return "none loaded"
    return "; ".join(f"{i.get('internal_api')} {i.get('version') or ''} ({i.get('filepath')})".replace("  ", " ")
                     for i in libs)


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
        "simd_level": _core.get_simd_level(),
        "simd_levels": ", ".join(f"{k}{'' if ok else ' (not on this CPU)'}"
                                 for k, ok in _core.simd_levels().items()),
    }


def show_config(file=None):
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
