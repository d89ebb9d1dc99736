"""``python -m streamguard.cli``."""

import sys

from streamguard.cli.main import main

sys.exit(main())
