"""redact(): secret-named keys masked whole, known secret values masked anywhere."""

from __future__ import annotations

from multistore.config import redact
from multistore.config.redact import collect_secret_values, redact_text


def test_redact_masks_keys_and_values_deeply() -> None:
    obj = {
        "store_params": {
            "root": "bucket",
            "storage_options": {"Key": "AKIA", "secret": None, "token": 12345},
            "credentials": {"client_email": "me@x", "private_key": "-----BEGIN"},
        },
        "urls": ["https://x.org/?t=abc123def", ("abc123def", 7)],
        "note": "no secret here",
    }
    out = redact(obj, ["abc123def", ""])
    assert out == {
        "store_params": {
            "root": "bucket",
            "storage_options": {"Key": "***", "secret": None, "token": "***"},
            "credentials": "***",
        },
        "urls": ["https://x.org/?t=***", ("***", 7)],
        "note": "no secret here",
    }
    assert obj["store_params"]["storage_options"]["Key"] == "AKIA"  # a copy, not in place


def test_longer_secrets_replaced_first() -> None:
    assert redact_text("pw=abcdef", ["abc", "abcdef"]) == "pw=***"


def test_collect_secret_values_exact_keys_only() -> None:
    params = {
        "root": "r",
        "storage_options": {"key": "id", "secret": "s", "keyring": "not-a-secret"},
        "credentials": {"a": "c1", "b": ["c2", 3, None, True]},
        "api_key_file": "/not/a/secret",
    }
    assert collect_secret_values(params) == {"id", "s", "c1", "c2", "3"}
