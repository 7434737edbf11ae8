import sys

from protlm.finetune.main import main

sys.exit(main())
