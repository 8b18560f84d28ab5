"""Logging setup: one JSON object per line on stderr (or plain text for a terminal)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Structured fields a caller passes as `extra={"fields": {...}}` (a repair's what,
        # found and done), kept as an object beside the message.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["fields"] = fields
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str = "INFO", json_output: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = not sys.stderr.isatty() if json_output is None else json_output
    handler.setFormatter(
        JsonFormatter() if use_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per request to a capsule is noise; errors still come through.
    logging.getLogger("httpx").setLevel(logging.WARNING)
