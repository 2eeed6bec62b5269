"""The `fuseval` command line (`fuseval --help`): one module per command group, on the app in `app.py`.

    build      merge, fuse                 generate   generate
    demo       world, demo                 evaluate   eval, scores, pairwise
    exchange   import-fastchat, export     suite      run, report, gate, history
    assets     import-gguf, assets

Library code never imports this package: what a command and the library share lives in
`harness.ui` (terminal output), `harness.run.resolve` and `harness.run.session`.
"""

# Importing a command module registers its commands; this order is the order of `fuseval --help`.
# isort: off
from harness.cli import build, generate, demo, evaluate, exchange, suite, assets  # noqa: F401
from harness.cli.app import app, exit_on_sigterm, main
# isort: on

__all__ = ["app", "exit_on_sigterm", "main"]
