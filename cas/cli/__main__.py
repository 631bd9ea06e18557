"""``python -m cas.cli`` runs the cas command."""

import sys

from . import main

sys.exit(main())
