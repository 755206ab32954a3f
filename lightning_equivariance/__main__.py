"""``python -m lightning_equivariance measure ...`` and ``--version`` (see :mod:`lightning_equivariance.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
