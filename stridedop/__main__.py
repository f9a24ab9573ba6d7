"""``python -m stridedop``: the command line (see ``stridedop --help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
