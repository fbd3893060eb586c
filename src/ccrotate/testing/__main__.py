"""``python -m ccrotate.testing``: serve the fake Anthropic upstream (see ``--help``)."""

import sys

from ccrotate.testing._cli import main

sys.exit(main())
