"""`python -m protlm.downstream` (see protlm/downstream/main.py)."""
from protlm import cli
from protlm.downstream.main import main

cli.run(main, "downstream")
