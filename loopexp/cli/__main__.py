"""``python -m loopexp.cli``: the ``loopexp`` command."""

from loopexp.cli import app

app()
