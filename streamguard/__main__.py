"""``python -m streamguard``."""

import sys

from streamguard.cli.main import main

sys.exit(main())
