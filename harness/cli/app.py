"""The `fuseval` typer app, at the bottom of the CLI package: the app, its global options, the entry point.

The commands live in one module per group beside this one (build, generate, demo, evaluate,
exchange, suite) and register themselves on `app` when `harness.cli` imports them.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from fusion.common.errors import FusevalError
from harness.ui import console, error

app = typer.Typer(help="Fuse and merge chat LLMs, and measure with honest error bars whether the result got better.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (CI timeouts, `kill`) into SystemExit, so `with` blocks stop the servers we started."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    # Transparent huge pages for torch's large CPU buffers (read when torch first allocates):
    # merges allocate tensor-sized temporaries, and 4 KiB page faults dominated those allocations.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # Our progress is rich's; the libraries' tqdm bars (lm-eval, datasets, transformers) would interleave with it.
    # tqdm reads TQDM_* defaults when it is first imported, so this must come before any library import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    exit_on_sigterm()
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (FusevalError, OSError) as e:  # ours, or the system's (a full disk, a permission): what, and where
        if _state["debug"]:
            raise
        message = str(e)
        if isinstance(e, OSError):
            message = f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)
        error(message)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like (typer >= 0.20 ships its own copy of click)
        import click

        clicks = tuple({click.exceptions, sys.modules.get("typer._click.exceptions", click.exceptions)})
        if any(isinstance(e, m.ClickException) for m in clicks):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":  # click.Abort, wherever this typer keeps it
            sys.exit(1)
        raise
