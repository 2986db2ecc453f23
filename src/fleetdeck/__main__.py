"""`python -m fleetdeck` is the `fleetdeck` command."""

import sys

from fleetdeck.cli import main

sys.exit(main())
