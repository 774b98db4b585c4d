"""`python -m codec.prepare`: Pack training data into uint8 shards. The command; the code is
codec.data.prepare's."""

import sys

from codec.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
