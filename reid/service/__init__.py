"""The search service: an HTTP API and a gallery page over an exported index."""
