"""``python -m bench orders | risk | mass-cancel | batching | stream | signals``."""

import sys

from bench import main

sys.exit(main())
