"""Schemathesis extension (loaded through SCHEMATHESIS_HOOKS by test_schemathesis.py): NDJSON,
which the OpenAPI document describes as the array of its lines, sent (import) and read (export)
as lines, so both are generated and validated like any JSON body."""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, list):
        return b"".join(_line(item) for item in value)
    return _line(value)  # not an array: one line, which the server must refuse


def _line(item: Any) -> bytes:
    try:
        return orjson.dumps(item) + b"\n"
    except TypeError:  # what orjson cannot write (big integers): the standard library can
        import json

        return json.dumps(item).encode() + b"\n"


@schemathesis.deserializer("application/x-ndjson")
def ndjson_lines(ctx: Any, response: Any) -> list[Any]:
    return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]
