"""``python -m cas`` runs the cas command."""

import sys

from .cli import main

sys.exit(main())
