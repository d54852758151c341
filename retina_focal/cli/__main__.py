"""``python -m retina_focal.cli COMMAND [ARGS...]``: the same as ``retina-focal``."""
import sys

from retina_focal.cli import main

if __name__ == "__main__":
    sys.exit(main())
