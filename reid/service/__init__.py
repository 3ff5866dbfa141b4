"""The search service: an HTTP API and a gallery page over an exported index (the ``serve``
extra; ``uploads.py`` and the settings import without it, the app refuses in one line)."""
