"""API tokens: their format, hashing, roles and store limits (no HTTP, no SQL).

A token is ``rs_`` followed by 43 characters of base64url: 256 random bits with a prefix that
secret scanners and people recognise. Only its SHA-256 is stored; the token itself is shown
once, when it is issued. A token belongs to one workspace and has a role:

- ``read``  -- reads of records, stores and usage;
- ``write`` -- also writes of records and stores;
- ``admin`` -- also tokens (and, for a token of the ``default`` workspace, other workspaces).

A token may be limited to named stores; it then cannot see or touch any other store.
`issue_token` is the one way tokens are made, by the server and by the command line alike.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .errors import InvalidRequest
from .model import check_store_name, format_datetime, parse_time

__all__ = [
    "DEFAULT_WORKSPACE",
    "ROLES",
    "TOKEN_PREFIX",
    "TokenInfo",
    "TokenStore",
    "check_role",
    "check_token_stores",
    "check_workspace_name",
    "hash_token",
    "issue_token",
    "new_token",
    "new_token_id",
]

TOKEN_PREFIX = "rs_"  # noqa: S105 - the public prefix, not a secret
DEFAULT_WORKSPACE = "default"
ROLES: dict[str, int] = {"read": 1, "write": 2, "admin": 3}

_WORKSPACE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def new_token() -> str:
    """A fresh token: ``rs_`` + base64url of 32 random bytes (43 characters, no padding)."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def new_token_id() -> str:
    """A short public id for a token (``tok_`` + 16 hex digits); safe to show and log."""
    return "tok_" + secrets.token_hex(8)


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_role(role: object) -> str:
    if type(role) is not str or role not in ROLES:
        raise InvalidRequest(
            "role must be one of 'admin', 'write', 'read'",
            {"role": role if isinstance(role, str) else None},
        )
    return role


def check_workspace_name(name: object) -> str:
    """A workspace name: 1-64 characters of ``A-Z a-z 0-9 _ . -``."""
    if type(name) is not str or not _WORKSPACE_NAME.fullmatch(name):
        raise InvalidRequest(
            "a workspace name is 1-64 characters of A-Z a-z 0-9 _ . -",
            {"workspace": name[:100] if isinstance(name, str) else None},
        )
    return name


def check_token_stores(stores: object) -> list[str] | None:
    """None (every store) or a non-empty list of store names, deduplicated in order."""
    if stores is None:
        return None
    if type(stores) is not list or not stores:
        raise InvalidRequest("stores must be a non-empty list of store names, or null")
    if len(stores) > 1000:
        raise InvalidRequest("a token is limited to at most 1000 named stores")
    return list(dict.fromkeys(check_store_name(name) for name in stores))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a token grants (never the token itself): its id, role, store limit and workspace."""

    id: str
    role: str
    stores: list[str] | None
    workspace: str
    created_at: datetime

    def allows(self, role: str) -> bool:
        """True if this token's role is `role` or above it."""
        return ROLES[self.role] >= ROLES[role]

    def can_use_store(self, name: str) -> bool:
        return self.stores is None or name in self.stores

    @property
    def manages_workspaces(self) -> bool:
        """An unlimited admin token of the ``default`` workspace: the operator's."""
        return self.role == "admin" and self.stores is None and self.workspace == DEFAULT_WORKSPACE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "stores": None if self.stores is None else list(self.stores),
            "workspace": self.workspace,
            "created_at": format_datetime(self.created_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenInfo:
        stores = data["stores"]
        return cls(
            id=data["id"],
            role=data["role"],
            stores=None if stores is None else list(stores),
            workspace=data["workspace"],
            created_at=parse_time(data["created_at"]),
        )


class TokenStore(Protocol):
    """Where tokens live (the engine): only hashes are handed over."""

    def create_token(
        self,
        workspace: str,
        role: str,
        stores: list[str] | None,
        token_id: str,
        token_hash: str,
    ) -> TokenInfo: ...


def issue_token(
    engine: TokenStore,
    *,
    role: object = "read",
    stores: object = None,
    workspace: object = DEFAULT_WORKSPACE,
) -> tuple[str, TokenInfo]:
    """Create a token (and its workspace, if new): returns the token, to be shown once, and
    what it grants. Raises `InvalidRequest` for a bad role, store list or workspace name."""
    checked_role = check_role(role)
    checked_stores = check_token_stores(stores)
    checked_workspace = check_workspace_name(workspace)
    token = new_token()
    info = engine.create_token(
        checked_workspace, checked_role, checked_stores, new_token_id(), hash_token(token)
    )
    return token, info
