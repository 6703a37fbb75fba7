"""One way every store checks the params it is given: a ``ConfigError`` naming each key.

Invalid store, open, search or preload params are a problem of the config that sent
them, whichever store finds them, so they raise the same error with the same located
messages (``open_params.bands[0]: 3 is not of type 'string'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xcube.util.jsonschema import JsonObjectSchema

from ..errors import ConfigError, Problem


def check_params(
    schema: JsonObjectSchema | Mapping[str, Any], params: Mapping[str, Any], where: str
) -> None:
    """Raise ``ConfigError`` with one problem per violation, located under ``where``."""
    import jsonschema

    as_dict = schema.to_dict() if isinstance(schema, JsonObjectSchema) else dict(schema)
    validator = jsonschema.Draft7Validator(as_dict)
    problems = [
        Problem(".".join([where, *map(str, e.absolute_path)]), e.message)
        for e in sorted(validator.iter_errors(dict(params)), key=str)
    ]
    if problems:
        raise ConfigError(problems)
