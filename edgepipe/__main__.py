"""``python -m edgepipe``: the same as ``python run.py`` and the ``edgepipe`` command."""
import sys

from edgepipe.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
