"""``python -m mfgnn``: the ``mfgnn`` command (what ``torchrun -m mfgnn`` launches)."""

import sys

from .cli import main

sys.exit(main())
