"""`python -m evostitch.cli`: the command line."""

from evostitch.cli import main

main()
