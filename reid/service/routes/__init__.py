"""The service's routes, one router per concern: ``system`` (page, health, stats, metrics),
``search``, ``gallery`` (what the index holds, enrolment, removal)."""

from ...optional import require

require("fastapi", "the search service (reid serve)")

from . import gallery, search, system  # noqa: E402

ROUTERS = (system.router, search.router, gallery.router)
