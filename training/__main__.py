"""Entry point for ``python -m training``; see :mod:`training.cli`."""

import sys

from training.cli import main, quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow()
    sys.exit(main())
