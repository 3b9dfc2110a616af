"""``python -m bench suite | scaling | orders | risk | guard | mass-cancel | batching | stream
| signals | live-signals | strategy``."""

import sys

from bench import main

sys.exit(main())
