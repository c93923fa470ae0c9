"""``python -m tinynet``: the tinynet command (tinynet/cli.py)."""
import sys

from .cli import main

sys.exit(main())
