"""``python -m demgen`` runs the command line."""

import sys

from demgen.cli import main

sys.exit(main())
