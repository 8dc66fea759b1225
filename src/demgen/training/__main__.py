"""``python -m demgen.training ARGS`` trains as ``demgen fit ARGS`` does."""

import sys

from demgen.training.cli import fit

fit(sys.argv[1:])
