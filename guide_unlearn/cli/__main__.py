"""``python -m guide_unlearn.cli``: the same as the ``guide-unlearn`` console script."""

import sys

from guide_unlearn.cli import main

sys.exit(main())
