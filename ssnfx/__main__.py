import sys

from ssnfx.cli import run

sys.exit(run())
