"""``python -m engines.cli`` runs ``routingctl`` (handy before the console script is installed)."""

import sys

from .routingctl import main

sys.exit(main())
