"""`python -m harness.cli ...`: the same as the `fuseval` command."""

from harness.cli import main

main()
