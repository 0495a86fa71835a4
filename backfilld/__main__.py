"""The console script (`backfilld`, `python -m backfilld`): answers `--version` and a plain `status` line
itself, and hands every other command line to the typer app (cli.py).

Why: typer (0.29, as constraints.txt pins it) validates every option it parses through a pydantic
TypeAdapter, and importing pydantic for that costs more than the rest of `--version` or `status` together
(issue 14: both under 0.2 s). What is answered here prints what typer's parse would (tests/unit/
test_startup_imports.py compares them, errors and broken pipes included); anything else, --help and
every mistake included, is typer's to parse and to explain.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    try:
        if argv == ["--version"]:
            from backfilld import __version__

            print(f"backfilld {__version__}", flush=True)
            return
        from backfilld import cmdline

        plain = cmdline.plain_status(argv)
        if plain is not None:
            cmdline.status(*plain)
            return
        from backfilld import cli

        cli.main()
    except KeyboardInterrupt:   # during `status`'s own answer (cli.main says the same for typer's)
        sys.exit(130)
    except BrokenPipeError:
        # the reader went away (`backfilld status ... | head -1`): exit 1 without a traceback, as typer does, and
        # without another one when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
