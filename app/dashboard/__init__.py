"""The read-only dashboard at ``GET /`` (server-rendered HTML, works without JavaScript).

``data`` turns audit events into view values (pure), ``html`` renders them (escaping
everything), ``router`` is the FastAPI ``APIRouter`` the server mounts.
"""
