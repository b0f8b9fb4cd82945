"""Build of fastopt's compiled core: Cython boundary + C kernels, OpenMP where the compiler has it.

Flags: optimize and vectorize, but keep IEEE semantics.  -fno-math-errno lets
sqrt vectorize; -ffp-contract=off keeps a*b+c from turning into an FMA in some
loops and not others, so results never depend on SIMD level or thread count;
-ffast-math is never used (it breaks NaN/Inf handling and parity with the
reference).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

GNU_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fopenmp-simd",
             "-std=c99"]
MSVC_FLAGS = ["/O2", "/fp:precise"]

OPENMP_TEST = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
""")


def _openmp_flags(compiler_type):
    """(compile, link) flags for OpenMP on this compiler, or None if it has none."""
    if os.environ.get("FASTOPT_DISABLE_OPENMP"):
        return None
    if compiler_type == "msvc":
        return ["/openmp"], []
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":  # Apple clang with Homebrew/conda libomp
        for prefix in (os.environ.get("LIBOMP_PREFIX", ""), "/opt/homebrew/opt/libomp",
                       "/usr/local/opt/libomp"):
            if prefix and os.path.isdir(prefix):
                candidates.insert(0, (["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                                      [f"-L{prefix}/lib", "-lomp"]))
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            cmd = cc + cflags + [src, "-o", os.path.join(tmp, "omp_test")] + lflags
            try:
                ok = subprocess.run(cmd, capture_output=True).returncode == 0
            except OSError:
                ok = False
            if ok:
                return cflags, lflags
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        base = MSVC_FLAGS if ctype == "msvc" else GNU_FLAGS
        openmp = _openmp_flags(ctype)
        if openmp is None:
            bar = "!" * 78
            sys.stderr.write(f"\n{bar}\n fastopt: the compiler has no OpenMP; building a SERIAL "
                             f"version.\n Steps will use one thread. Install an OpenMP runtime "
                             f"(libgomp, libomp) to fix.\n{bar}\n\n")
            compile_flags, link_flags = base, []
        else:
            compile_flags, link_flags = base + openmp[0], openmp[1]
        summary = " ".join(compile_flags)
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = link_flags
            ext.define_macros = ext.define_macros + [("FO_COMPILE_ARGS", f'"{summary}"')]
        super().build_extensions()


# Both extensions: src_c/ headers, NumPy's, and one C-API floor.
# NPY_TARGET_VERSION: whatever NumPy 2.x builds them, they run with
# NumPy >= 1.23 (the floor declared in pyproject.toml).
COMMON = dict(
    include_dirs=["src_c", np.get_include()],
    depends=sorted(glob.glob("src_c/*.h") + glob.glob("fastopt/*.pxi")),
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION"),
                   ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")],
)

extensions = [
    Extension("fastopt._core",
              sources=["fastopt/_core.pyx", "src_c/kernels.c", "src_c/norms.c", "src_c/factored.c",
                       "src_c/overlap.c", "src_c/omp_library.c"], **COMMON),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
