"""`python -m lorashear ...` is the `lorashear` command."""

import sys

from lorashear.cli import main

sys.exit(main())
