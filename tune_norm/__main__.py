"""`python -m tune_norm`: the tune-norm command line."""

from .cli import main

main()
