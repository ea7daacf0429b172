"""`python -m vmmio`: the `vmmio` command."""

import sys

from vmmio.cli import main

sys.exit(main())
