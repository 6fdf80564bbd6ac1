"""``python -m stubserver``: the same as the ``stubserver`` console script."""

import sys

from stubserver._cli import main

sys.exit(main())
