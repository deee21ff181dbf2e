#!/usr/bin/env python3
"""edgepipe: python run.py --profile fd+fer64 [options]; python run.py metrics|models|bench --help."""
import sys

from edgepipe.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
