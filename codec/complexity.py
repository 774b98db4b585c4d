"""`python -m codec.complexity`: Model complexity (the report's Part 4). The command; the code is
codec.models.complexity's."""

import sys

from codec.models.complexity import main

if __name__ == "__main__":
    sys.exit(main())
