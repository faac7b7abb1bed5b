"""Who may do what over HTTP: users with roles, identified by bearer tokens of which only hashes are stored.

Roles, each including the ones before it:

- ``operator``: view results, frames, stats, metrics, the schema, the verification queue; confirm reviews
  and decide queued boards (``POST /review/items/{id}/decision``).
- ``engineer``: change things (thresholds, recipes, review exports, model selection): every request that
  is not a read needs it unless a rule below says otherwise.
- ``admin``: users, tokens, model promotion, the audit trail.

The role an endpoint needs is decided here, from the request's method and path (``required_role``), for
every endpoint of the app, including ones added later: a new POST endpoint is engineer-only until a rule
says otherwise. Tokens are random strings given to people and tools; the configuration holds only
``sha256:<hex>`` of each (``python -m inspector.service.auth`` makes a token and its hash). A fast hash is
enough for random tokens of 16+ characters (nothing to guess from); comparison is constant-time.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

ROLES = ("operator", "engineer", "admin")
HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
LEGACY_TOKEN_USER = "token"  # the single ``token`` setting: an admin, for set-ups without a user list

# (method pattern, path pattern, role): the first match decides; reads need operator, changes engineer.
ROLE_RULES: tuple[tuple[str, str, str], ...] = (
    (r".*", r"^/(audit|users|tokens)(/|$)", "admin"),
    (r".*", r"/promot", "admin"),  # promoting a model to the line
    (r"^POST$", r"/confirm$", "operator"),  # an operator confirms a review
    (r"^POST$", r"^/review/items/\d+/decision$", "operator"),  # an operator verifies a queued board
    (r"^POST$", r"^/review/export$", "engineer"),  # an engineer turns the verdicts into training data
    (r"^(GET|HEAD|OPTIONS)$", r".*", "operator"),
    (r".*", r".*", "engineer"),
)


@dataclass(frozen=True)
class User:
    name: str
    role: str  # one of ROLES
    token_sha256: str  # "sha256:<64 hex>"

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def required_role(method: str, path: str) -> str:
    for method_pattern, path_pattern, role in ROLE_RULES:
        if re.search(method_pattern, method.upper()) and re.search(path_pattern, path):
            return role
    return "admin"


class Authenticator:
    """Finds the user of a bearer token: every stored hash is compared (constant time, no early exit)."""

    def __init__(self, users: Iterable[User]):
        self.users = tuple(users)
        if not self.users:
            raise ValueError("no users: the HTTP API needs a token or a user list")

    def identify(self, token: Optional[str]) -> Optional[User]:
        if not token:
            return None
        given = hash_token(token).encode()
        found = None
        for user in self.users:
            if secrets.compare_digest(given, user.token_sha256.encode()):
                found = user
        return found


def users_from_config(config) -> list[User]:
    """The users of a ServiceConfig: its ``users`` list, those of ``users_file``, and the legacy ``token`` as
    an admin named "token"."""
    users = [User(entry.name, entry.role, entry.token_sha256) for entry in (config.users or [])]
    if config.users_file is not None:
        users += read_users_file(config.users_file)
    if config.token is not None:
        users.append(User(LEGACY_TOKEN_USER, "admin", hash_token(config.token)))
    names = [user.name for user in users]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"users: name(s) {', '.join(duplicated)} given twice")
    hashes = [user.token_sha256 for user in users]
    if len(set(hashes)) != len(hashes):
        raise ValueError("users: two users share one token; give each its own")
    return users


def read_users_file(path: Path) -> list[User]:
    """``users:`` (a list of name, role, token_sha256) from a YAML file; ValueError naming the file and entry."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"users_file {path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"users_file {path}: not valid YAML: {error}") from None
    entries = data.get("users") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"users_file {path}: expected 'users:' with a list of name, role, token_sha256")
    users = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "token_sha256"}:
            raise ValueError(f"users_file {path}: user {number}: expected exactly name, role, token_sha256")
        problem = user_problem(str(entry["name"]), str(entry["role"]), str(entry["token_sha256"]))
        if problem:
            raise ValueError(f"users_file {path}: user {number} ({entry['name']}): {problem}")
        users.append(User(str(entry["name"]), str(entry["role"]), str(entry["token_sha256"])))
    return users


def user_problem(name: str, role: str, token_sha256: str) -> Optional[str]:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        return "name: expected 1-64 letters, digits, '_', '.', '@', '-'"
    if role not in ROLES:
        return f"role: expected one of {', '.join(ROLES)}, got {role!r}"
    if not re.fullmatch(HASH_PATTERN, token_sha256):
        return "token_sha256: expected sha256:<64 hex digits> (python -m inspector.service.auth makes one)"
    return None


def main(argv: list[str]) -> int:
    """``python -m inspector.service.auth [TOKEN]``: a new random token (or the one given) and its hash."""
    token = argv[0] if argv else secrets.token_urlsafe(24)
    if len(token) < 16:
        print("a token needs at least 16 characters", file=sys.stderr)
        return 2
    print(f"token:        {token}\ntoken_sha256: {hash_token(token)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
