"""``python -m stubserver``: the same as the ``stubserver`` console script."""

import sys

from stubserver.cli.main import main

sys.exit(main())
