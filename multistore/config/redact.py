"""Hide secrets (tokens, keys, passwords) before anything is shown, logged or written."""

from __future__ import annotations

import json
import re
import urllib.parse
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


# URL query parameters that carry credentials (compared lower-case, exact).
URL_SECRET_PARAMS = SECRET_KEYS | {
    "apikey",
    "auth",
    "authorization",
    "sig",
    "signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-credential",
    "x-goog-signature",
}
# Query parameters of pre-signed URLs that change with every signing but name no content
# (Azure SAS, AWS SigV4, GCS V4): dropped with the credentials by ``unsigned_url``.
URL_SIGNING_PARAMS = frozenset({
    "se", "sp", "spr", "sr", "st", "sv", "skoid", "sktid", "skt", "ske", "sks", "skv",
    "x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders",
    "x-goog-algorithm", "x-goog-date", "x-goog-expires", "x-goog-signedheaders",
    "expires", "key-pair-id", "policy",
})  # fmt: skip
# Shorter values would mask ordinary words and digits everywhere.
MIN_SECRET_LENGTH = 4

_QUERY_PARAM = re.compile(r"(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#;\s'\"\\]+)")
_URL_PASSWORD = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def secrets_in_text(text: str) -> set[str]:
    """Credentials written into a string: secret-named query values, URL passwords.

    ``web:a.tif?token=abc`` yields ``abc``; both the text as written and its
    URL-decoded form are returned.
    """
    found: set[str] = set()
    if "=" in text:
        query_start = text.find("?")
        if query_start >= 0:
            for match in _QUERY_PARAM.finditer(text, query_start + 1):
                if match.group("name").lower() in URL_SECRET_PARAMS:
                    found.add(match.group("value"))
    for match in _URL_PASSWORD.finditer(text):
        found.add(match.group("password"))
    return found | {urllib.parse.unquote_plus(v) for v in found}


def unsigned_url(url: str) -> str:
    """``url`` without credential and signing query parameters: what a pre-signed URL
    points at, the same for every signing (``?sv=..&se=..&sig=..`` of a SAS token)."""
    if "?" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    drop = URL_SECRET_PARAMS | URL_SIGNING_PARAMS
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in drop
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def secret_strings(obj: Any) -> set[str]:
    """``secrets_in_text`` of every string below ``obj`` (an iterative walk)."""
    found: set[str] = set()
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found |= secrets_in_text(value)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return found


def secret_forms(secret: str) -> set[str]:
    """Every way ``secret`` may be printed: raw, repr- and JSON-escaped, URL-quoted.

    ``repr`` escapes once per level (a repr of a dict in an exception message inside a
    logged repr...), so two levels of escaping are covered.
    """
    forms = {secret}
    for _ in range(2):
        for form in list(forms):
            forms.add(form.encode("unicode_escape").decode("ascii"))
            forms.add(repr(form)[1:-1])
            forms.add(form.replace("\\", "\\\\").replace("'", "\\'"))
            forms.add(form.replace("\\", "\\\\").replace('"', '\\"'))
            forms.add(json.dumps(form)[1:-1])
            forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
    for form in list(forms):
        forms.add(urllib.parse.quote(form, safe=""))
        forms.add(urllib.parse.quote(form))
        forms.add(urllib.parse.quote_plus(form))
    return {f for f in forms if f}


class Masker:
    """The one masker: replaces every form of every known secret in a text by ``***``.

    Secret-named URL query values (``?token=...``) are masked even when not known.
    Built once per config; calling it is one regular-expression pass.
    """

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        values = {v for v in secret_values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH}
        forms = set().union(*(secret_forms(v) for v in values)) if values else set()
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._has_values = bool(values)

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(MASK, text)
        if "=" in text or "://" in text:
            text = _mask_url_secrets(text)
        return text

    def __bool__(self) -> bool:
        return self._has_values


def _mask_url_secrets(text: str) -> str:
    def query(match: re.Match[str]) -> str:
        if match.group("name").lower() in URL_SECRET_PARAMS and match.group("value") != MASK:
            return f"{match.group('name')}={MASK}"
        return match.group(0)

    if "?" in text:
        start = text.find("?")
        text = text[: start + 1] + _QUERY_PARAM.sub(query, text[start + 1 :])
    return _URL_PASSWORD.sub(lambda m: f"://{m.group('user')}:{MASK}@", text)


def redact(obj: Any, secret_values: Iterable[str] = ()) -> Any:
    """A deep copy of ``obj`` with secrets replaced by ``"***"``.

    Values of secret-named keys are masked whole; every form of a known secret value
    is masked wherever it appears inside a longer string (e.g. in a URL).
    Mapping/sequence types become dicts/lists; other objects are returned as is.
    """
    return _redact(obj, Masker(secret_values))


def redact_text(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every form of every known secret value replaced by ``"***"``."""
    return Masker(secret_values)(text)


def _redact(obj: Any, mask: Masker) -> Any:
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, Mapping):
        return {
            key: (MASK if is_secret_key(key) and value is not None else _redact(value, mask))
            for key, value in obj.items()
        }
    if isinstance(obj, tuple):
        return tuple(_redact(v, mask) for v in obj)
    if isinstance(obj, list):
        return [_redact(v, mask) for v in obj]
    return obj
