"""`python -m dojoc` and the `dojoc` console script: the command line, guarded against Ctrl-C from its
first import on (`dojoc.interrupt`)."""

from __future__ import annotations

from dojoc.interrupt import guard


def main() -> None:
    """Console entry point."""
    guard()
    from dojoc.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
