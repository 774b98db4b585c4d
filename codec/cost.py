"""`python -m codec.cost`: A sweep's cost: record measured throughput. The command; the code is
codec.runs.cost's."""

import sys

from codec.runs.cost import main

if __name__ == "__main__":
    sys.exit(main())
