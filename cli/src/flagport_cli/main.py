"""Entry point of the ``flags`` console script."""

import sys


def main() -> None:
    sys.stderr.write("flags: not implemented yet\n")
    raise SystemExit(2)
