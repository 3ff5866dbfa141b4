"""``python -m reid COMMAND …``: the ``reid`` command."""

from .cli import main

main()
