"""`python -m protlm.downstream` (see protlm/downstream/main.py)."""
import sys

from protlm.downstream.main import main

sys.exit(main())
