"""What fuseval shows on a terminal: status and progress on stderr, result tables on stdout.

Shared by the command line (harness/cli/) and the library code that reports as it works (the demo,
a suite run and its report), so neither has to import the other.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

# No hard wraps: lines stay greppable in CI logs. No markup: paths, model names and messages print as they are
# (`fuseval[lmeval]` is not a style); `error()` colours its label with a Text.
console = Console(stderr=True, soft_wrap=True, markup=False)
# result tables go to stdout, progress and status to stderr; piped tables keep whole cells on one line
results = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200, markup=False)


def error(message: str) -> None:
    """One line on stderr: `error: MESSAGE`, the label in red where the terminal shows colour."""
    console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def progress() -> Progress:
    """A transient progress bar on stderr: description, bar, done/total, elapsed time."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def quiet_libraries() -> None:
    """Our progress bars show progress; the libraries' own bars and request logs would interleave."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class Phases:
    """The runner's phases (`harness.run.runner.Progress`) as one rich progress bar: generate and judge, per model
    and bench."""

    def __init__(self, prog: Progress) -> None:
        self.prog, self.task = prog, None

    def phase(self, description: str, total: int | None) -> None:
        if self.task is not None:
            self.prog.remove_task(self.task)
        self.task = self.prog.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.prog.advance(self.task, n)
