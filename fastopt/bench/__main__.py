"""``python -m fastopt.bench``: the same as ``python -m fastopt bench``."""

import argparse
import sys

from fastopt.bench import cli

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench", description=cli.DESCRIPTION)
    cli.configure(parser)
    sys.exit(cli.main(parser.parse_args()))
