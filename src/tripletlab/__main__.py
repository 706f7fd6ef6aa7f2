"""``python -m tripletlab`` runs the command-line interface."""

import sys

from tripletlab.cli import main

sys.exit(main())
