"""`python -m evostitch`: the command line."""

from evostitch.cli import main

main()
