"""python -m nvfp4: see nvfp4.cli."""

import sys

from .cli import main

sys.exit(main())
