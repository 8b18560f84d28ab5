"""The fields of a request's JSON body, checked: a wrong type or a NUL byte is a 400 naming the
field."""

from __future__ import annotations

from .errors import bad

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

    Body = Dict[str, object]


def text(body: Body, key: str, required: bool = False) -> Optional[str]:
    value = body.get(key)
    if value is None:
        if required:
            raise bad("%s is required" % key)
        return None
    if not isinstance(value, str):
        raise bad("%s must be a string" % key)
    if "\x00" in value:
        raise bad("%s contains a NUL byte" % key)
    return value


def required(body: Body, key: str) -> str:
    value = text(body, key, required=True)
    if not value:
        raise bad("%s must not be empty" % key)
    return value


def integer(body: Body, key: str, low: int, high: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad("%s must be an integer from %d to %d" % (key, low, high))
    return value


def text_list(body: Body, key: str) -> Optional[List[str]]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad("%s must be a list of strings" % key)
    if any("\x00" in v for v in value):
        raise bad("%s contains a NUL byte" % key)
    return [str(v) for v in value]


def env_vars(body: Body, key: str) -> Optional[Dict[str, str]]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("%s must be an object of strings" % key)
    env: Dict[str, str] = {}
    for name, text in value.items():
        valid = isinstance(name, str) and isinstance(text, str) and name and "=" not in name
        if not valid or "\x00" in name + text:
            raise bad("%s: invalid variable %r" % (key, name))
        env[name] = text
    return env
