"""``python -m tripletlab.cli`` runs the command-line interface (as ``python -m tripletlab``)."""

import sys

from tripletlab.cli import main

sys.exit(main())
