"""The build: OpenMP really on, SIMD levels, show_config()."""

import io
import os
import sys

import pytest

import fastopt
from fastopt import _core


@pytest.mark.skipif(os.environ.get("FASTOPT_SKIP_OPENMP_TEST") == "1",
                    reason="FASTOPT_SKIP_OPENMP_TEST=1: a serial build is expected (no OpenMP, or "
                           "FASTOPT_DISABLE_OPENMP at build time)")
def test_openmp_parallelism_enabled():
    """The one test that fails when the build silently fell back to the serial version (Linux has OpenMP)."""
    if not sys.platform.startswith("linux") and not _core.build_info()["openmp"]:
        pytest.skip("no OpenMP on this platform's compiler")
    assert _core.build_info()["openmp"], "fastopt was built without OpenMP"
    fastopt.set_num_threads(2)
    try:
        assert _core._openmp_probe(1000) == [0, 1]
    finally:
        fastopt.set_num_threads(None)


def test_simd_levels_and_forcing():
    levels = _core.simd_levels()
    assert levels["baseline"] is True
    assert _core.get_simd_level() in levels
    best = [name for name, ok in levels.items() if ok][-1]
    assert _core.get_simd_level() == best
    with pytest.raises(ValueError, match="SIMD level 'sse9'"):
        _core.set_simd_level("sse9")
    _core.set_simd_level("baseline")
    try:
        assert _core.get_simd_level() == "baseline"
    finally:
        _core.set_simd_level(None)


def test_simd_environment_variable_is_read_at_import(tmp_path):
    import subprocess

    code = "from fastopt import _core; print(_core.get_simd_level())"
    env = dict(os.environ, FASTOPT_SIMD="baseline")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "baseline"
    env["FASTOPT_SIMD"] = "nonsense"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert "FASTOPT_SIMD ignored" in out.stderr


def test_show_config_reports_the_build():
    buffer = io.StringIO()
    fastopt.show_config(file=buffer)
    text = buffer.getvalue()
    for key in ("fastopt", "numpy", "compiler", "compile_args", "openmp", "openmp_runtime",
                "num_threads", "simd_level"):
        assert f"{key} " in text
    assert "-ffp-contract=off" in text and "-ffast-math" not in text
    if _core.build_info()["openmp"] and sys.platform.startswith("linux"):
        assert "libgomp" in text or "libomp" in text


def test_signatures_match_the_reference():
    import inspect

    from fastopt import reference

    for name in reference.__all__:
        assert inspect.signature(getattr(fastopt, name)) == inspect.signature(getattr(reference, name))
        assert "Pure-NumPy twin" in getattr(fastopt, name).__doc__
