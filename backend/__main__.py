"""``python -m backend``: the same as the ``pla4d-backend`` console script."""

import sys

from backend.server import main

sys.exit(main())
