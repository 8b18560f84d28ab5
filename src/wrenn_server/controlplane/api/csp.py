"""Content security policy pieces shared by the pages this server sends (dashboard, /docs)."""

from __future__ import annotations

import base64
import hashlib
import re

# Inline scripts of a page: a `<script>` tag without attributes (no src), as both SvelteKit's
# shell and Swagger UI's page write them.
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def inline_script_hashes(html: str) -> list[str]:
    """CSP source expressions (`'sha256-...'`) allowing exactly the page's inline scripts."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(html)
    ]
