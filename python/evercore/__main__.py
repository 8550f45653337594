"""``python -m evercore``: the same as the ``evercore`` command."""

import sys

from evercore.cli import main

sys.exit(main())
