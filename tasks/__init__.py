"""Importing `tasks` registers every protlm seqio task (see protlm/data/tasks.py for the FASTA locations)."""
from protlm.data.tasks import TASK_NAMES, register_tasks

register_tasks()

__all__ = ["TASK_NAMES", "register_tasks"]
