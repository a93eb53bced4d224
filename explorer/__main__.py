"""`python -m explorer` is the `rollout-explorer` command."""

import sys

from explorer.cli import main

sys.exit(main())
