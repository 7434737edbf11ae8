from protlm import cli
from protlm.finetune.main import main

cli.run(main, "finetune")
