"""Command line: ``python -m fastopt {demo,bench,config}``.

Each subcommand lives in its own module, imported only when it runs, so that
``import fastopt`` stays light; a module exposes ``configure(parser)`` to add
its arguments and ``main(args)`` to run.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("fastopt.demo.cli", "the lecture, runnable: loss surfaces, GD variants, Adam on MNIST"),
    "bench": ("fastopt.bench.cli", "throughput of every step against NumPy, the traffic ceiling and peers"),
    "config": ("fastopt._config", "print versions, compiler flags, OpenMP, threads and SIMD level"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
    # Arguments of a subcommand come from its module; import only the one asked
    # for, before parsing, so that its --help lists them.
    words = sys.argv[1:] if argv is None else list(argv)
    chosen = next((w for w in words if not w.startswith("-")), None)
    if chosen in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[chosen][0])
        if hasattr(module, "configure"):
            module.configure(sub.choices[chosen])
    args = parser.parse_args(argv)
    return importlib.import_module(args._module).main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
