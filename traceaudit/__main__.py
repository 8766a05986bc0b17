"""``python -m traceaudit``: the same command line as the ``traceaudit`` script."""

from traceaudit.cli import run

run()
