"""The error codes of the specification, as one table and one exception tree.

Every failure that reaches a user is one of these, raised once in the core and only translated
at the interfaces (an HTTP status, a CLI exit line, the same class again in the remote client)::

    Error                      .code, .message, .details
    ├── InvalidRequest         400  malformed body, unknown op or field, bad parameter
    ├── InvalidKey             400  key not a non-empty string <= 1024 bytes without NUL
    ├── InvalidValue           400  a value JSON cannot represent
    ├── Unauthorized           401  missing or unknown token
    ├── Forbidden              403  the token's role or store list does not allow it
    ├── NotFound               404  a store or record that must exist does not
    ├── Conflict               409  a version check failed; store already exists
    ├── HasDependents          409  deleting a store that has dependents
    ├── ValueTooLarge          413  value or request over its limit
    ├── TypeMismatch           422  increment on a non-integer, append to a non-list, ...
    ├── OutOfRange             422  integer result outside signed 64-bit
    ├── QuotaExceeded          403  the write would pass the workspace quota
    ├── RateLimited            429  over a configured request rate
    └── Unavailable            503  the database is unreachable or out of space

`error_class(code)` maps a code back to its class, so a remote client raises exactly what the
embedded library would.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

__all__ = [
    "DISK_FULL_ERRNOS",
    "ERRORS",
    "Conflict",
    "Error",
    "Forbidden",
    "HasDependents",
    "InvalidKey",
    "InvalidRequest",
    "InvalidValue",
    "NotFound",
    "OutOfRange",
    "QuotaExceeded",
    "RateLimited",
    "TypeMismatch",
    "Unauthorized",
    "Unavailable",
    "ValueTooLarge",
    "error_class",
]


class Error(Exception):
    """Base of every runstate error: `.code` (stable, snake_case), `.message`, `.details`."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details if details is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"

    def to_dict(self) -> dict[str, Any]:
        """The error envelope's inner object: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def with_details(self, **extra: Any) -> Error:
        """Add details (e.g. the failing op's index in a batch) and return self."""
        self.details.update(extra)
        return self


class InvalidRequest(Error):
    code = "invalid_request"
    status = 400


class InvalidKey(Error):
    code = "invalid_key"
    status = 400


class InvalidValue(Error):
    code = "invalid_value"
    status = 400


class Unauthorized(Error):
    code = "unauthorized"
    status = 401


class Forbidden(Error):
    code = "forbidden"
    status = 403


class NotFound(Error):
    code = "not_found"
    status = 404


class Conflict(Error):
    code = "conflict"
    status = 409


class HasDependents(Error):
    code = "has_dependents"
    status = 409


class ValueTooLarge(Error):
    code = "value_too_large"
    status = 413


class TypeMismatch(Error):
    code = "type_mismatch"
    status = 422


class OutOfRange(Error):
    code = "out_of_range"
    status = 422


class QuotaExceeded(Error):
    code = "quota_exceeded"
    status = 403


class RateLimited(Error):
    code = "rate_limited"
    status = 429


class Unavailable(Error):
    code = "unavailable"
    status = 503


ERRORS: dict[str, type[Error]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidKey,
        InvalidValue,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        HasDependents,
        ValueTooLarge,
        TypeMismatch,
        OutOfRange,
        QuotaExceeded,
        RateLimited,
        Unavailable,
    )
}


def error_class(code: str) -> type[Error]:
    """The exception class for an error code; unknown codes map to the base `Error`."""
    return ERRORS.get(code, Error)


# The `OSError.errno` values that mean the disk (or the user's quota of it) is full: reported as
# `unavailable` (reason ``disk_full``) wherever a file write fails, as writes resume once space
# is freed.
DISK_FULL_ERRNOS = frozenset(
    code for code in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if code
)
