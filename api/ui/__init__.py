"""The built-in chat UI: a single page served by the API (same origin), its static files, and the
names its browser session uses. Routes live in api/routes/ui.py."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "hearth_session"
# sent by the UI's own scripts on every request: a cross-site form or image cannot set a custom
# header, so a cookie-authenticated change without it is refused (CSRF defence beside SameSite)
CSRF_HEADER = "X-Hearth-UI"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
