"""Hide secrets (tokens, keys, passwords) before anything is shown, logged or written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# store_params keys whose values are credentials (compared lower-case, exact).
SECRET_KEYS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "access_token",
        "secret_access_key",
        "aws_secret_access_key",
        "aws_access_key_id",
        "aws_session_token",
        "session_token",
        "api_key",
        "client_secret",
        "credentials",
        "private_key",
    }
)


def is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def secret_leaves(obj: Any) -> set[str]:
    """Every scalar below ``obj`` as a string: all of a secret key's value is secret."""
    if isinstance(obj, Mapping):
        return set().union(*(secret_leaves(v) for v in obj.values()))
    if isinstance(obj, list | tuple | set | frozenset):
        return set().union(*(secret_leaves(v) for v in obj))
    if obj is None or isinstance(obj, bool):
        return set()
    text = str(obj)
    return {text} if text else set()


def collect_secret_values(obj: Any) -> set[str]:
    """Values of secret-named keys anywhere below ``obj`` (e.g. ``storage_options.secret``)."""
    found: set[str] = set()
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if is_secret_key(key):
                found |= secret_leaves(value)
            else:
                found |= collect_secret_values(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            found |= collect_secret_values(value)
    return found


def redact(obj: Any, secret_values: Iterable[str] = ()) -> Any:
    """A deep copy of ``obj`` with secrets replaced by ``"***"``.

    Values of secret-named keys are masked whole; any known secret value is
    masked wherever it appears inside a longer string (e.g. in a URL).
    Mapping/sequence types become dicts/lists; other objects are returned as is.
    """
    secrets = sorted({s for s in secret_values if s}, key=len, reverse=True)
    return _redact(obj, secrets)


def redact_text(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every known secret value replaced by ``"***"``."""
    for secret in sorted({s for s in secret_values if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, MASK)
        return obj
    if isinstance(obj, Mapping):
        return {
            key: (MASK if is_secret_key(key) and value is not None else _redact(value, secrets))
            for key, value in obj.items()
        }
    if isinstance(obj, tuple):
        return tuple(_redact(v, secrets) for v in obj)
    if isinstance(obj, list):
        return [_redact(v, secrets) for v in obj]
    return obj
