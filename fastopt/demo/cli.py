"""``python -m fastopt demo``: the lecture on optimization, runnable.

Writes PNG figures, the numbers behind every curve (one JSON file per part)
and a summary table per part to the terminal.
"""

import argparse
import dataclasses
import importlib
import importlib.util
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import fastopt
from fastopt.demo.experiments import PARTS

# import name -> what pip installs; the demo extra brings all three
REQUIREMENTS = {"matplotlib": "matplotlib", "mlxtend": "mlxtend", "tqdm": "tqdm"}
INSTALL_HINT = 'pip install "fastopt[demo]"'


def configure(parser):
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small models and few epochs (the default): 39-69 s measured on two busy cores "
                           "(see docs/demo.md)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the paper's MLP size and 45 epochs: 5-7.5 min measured on two busy cores "
                           "(see docs/demo.md)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", type=Path, default=Path("fastopt-demo"), metavar="DIR",
                        help="where figures and data go (default: ./fastopt-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, initialization, batches")
    parser.add_argument("--only", choices=list(PARTS), action="append", metavar="PART",
                        help=f"run only this part (repeatable): {', '.join(PARTS)}")
    parser.add_argument("--threads", type=_threads, default=1, metavar="N",
                        help="threads for fastopt's steps and for BLAS (default 1: the demo's models are "
                             "small, and one thread keeps its timings steady on a busy CPU); 'auto' keeps "
                             "the libraries' defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _threads(text):
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--threads must be >= 1 or 'auto'")
    return value


def missing_requirements():
    return [pip_name for module, pip_name in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


@contextmanager
def thread_limits(threads):
    """fastopt's and BLAS's thread counts set to threads for the block (None: leave them)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = fastopt.get_num_threads()
    fastopt.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        fastopt.set_num_threads(previous)


def run_part(name, mode, seed, out_dir, show_progress=True, settings=None):
    """Run one part, write its figures and JSON; return (result, figure paths, seconds).

    seconds counts the whole part, figures included ("plot_seconds" in the JSON is their share).
    """
    from fastopt.demo.report import write_json

    module = importlib.import_module(PARTS[name])
    settings = settings or module.PRESETS[mode]
    start = time.perf_counter()
    result = module.run(settings, seed, show_progress)
    plot_start = time.perf_counter()
    figures = module.plot(result, out_dir)
    end = time.perf_counter()
    seconds, plot_seconds = end - start, end - plot_start
    write_json({"part": name, "mode": mode, "seed": seed, "fastopt": fastopt.__version__,
                "threads": fastopt.get_num_threads(), "seconds": seconds, "plot_seconds": plot_seconds,
                "settings": dataclasses.asdict(settings), "result": result}, out_dir / f"{name}.json")
    return result, figures, (seconds, plot_seconds)


def main(args):
    missing = missing_requirements()
    if missing:
        print(f"The demo needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
              f"installed.  Install the demo extra:\n\n    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    from fastopt.demo.report import format_table

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = args.only or list(PARTS)
    threads = "libraries' defaults" if args.threads is None else str(args.threads)
    print(f"fastopt {fastopt.__version__} demo: --{args.mode}, seed {args.seed}, threads {threads}, "
          f"output in {out_dir}/")
    start = time.perf_counter()
    with thread_limits(args.threads):
        for k, name in enumerate(parts, 1):
            module = importlib.import_module(PARTS[name])
            print(f"\n[{k}/{len(parts)}] {name}: {module.TITLE}")
            result, figures, (seconds, plot_seconds) = run_part(name, args.mode, args.seed, out_dir,
                                                                show_progress=not args.no_progress)
            print(format_table(*module.table(result)))
            for line in getattr(module, "notes", lambda r: [])(result):
                print(textwrap.fill(line, 100, initial_indent="  * ", subsequent_indent="    ",
                                    break_on_hyphens=False))
            print(f"  {seconds:.1f} s ({plot_seconds:.1f} s of it drawing figures); wrote {name}.json, "
                  + ", ".join(Path(f).name for f in figures))
    print(f"\nDone in {time.perf_counter() - start:.0f} s.  Figures and data: {out_dir.resolve()}/")
    return 0
