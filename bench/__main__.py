"""``python -m bench orders | risk``."""

import sys

from bench import main

sys.exit(main())
