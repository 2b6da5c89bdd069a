"""`python -m veclip <job> ...`: the same as the `veclip` command (veclip.cli)."""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main())
