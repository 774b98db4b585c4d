"""`python -m codec.datasets`: Test sets by manifest: list, fetch, verify. The command; the code is
codec.data.test_sets's."""

import sys

from codec.data.test_sets import main

if __name__ == "__main__":
    sys.exit(main())
