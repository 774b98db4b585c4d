"""`python -m codec.pretrained`: Export a finished sweep's runs as base checkpoints (pretrained/). The command;
the code is codec.runs.pretrained's."""

import sys

from codec.runs.pretrained import main

if __name__ == "__main__":
    sys.exit(main())
