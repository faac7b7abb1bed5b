"""Who may change what in the operator window: operators view and run; engineer actions (thresholds, recipe,
model, golden template, saved review decisions) need an engineer's PIN or token, checked against a hash in
the GUI settings (``engineers``: name -> hash). The session unlocks for a bounded time and can be locked
again at once.

Hashes, never the secret, are stored, and neither is ever logged:

- ``scrypt:<salt hex>:<hash hex>`` for a PIN: a 4-8 digit PIN has too few values for a plain fast hash
  (a million SHA-256 guesses take a second), so it gets a salted, memory-hard one (``hashlib.scrypt``);
- ``sha256:<hex>``, the service's token hash (``inspector.service.auth.hash_token``), for a random token of
  16+ characters: an engineer can use the token the service's users file gives them.

``python -m gui.access NAME [--config FILE]`` asks for a PIN twice and stores its hash for NAME (with the
GUI closed: the window writes its settings back when it closes).
After ``MAX_FAILURES`` wrong PINs in a row the login is refused for ``LOCKOUT_S`` seconds.
"""
from __future__ import annotations

import argparse
import getpass
import hashlib
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Callable

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}  # ~50 ms and 16 MiB per check: slow for guessing, fine for a login
MIN_PIN = 4
MAX_FAILURES = 5
LOCKOUT_S = 60.0
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"  # as the service's user names
HASH_FORMS = r"^(scrypt:[0-9a-f]{32}:[0-9a-f]{64}|sha256:[0-9a-f]{64})$"


class AccessDenied(Exception):
    """A login refused; the message says why (never what was typed)."""


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of ``pin`` for the settings file."""
    if len(pin) < MIN_PIN:
        raise ValueError(f"a PIN needs at least {MIN_PIN} characters")
    salt = secrets.token_bytes(16)
    return f"scrypt:{salt.hex()}:{_scrypt(pin, salt).hex()}"


def _scrypt(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8", "surrogateescape"), salt=salt, dklen=32, **SCRYPT)


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored`` (either hash form); constant-time comparison."""
    if stored.startswith("scrypt:"):
        _, salt, expected = stored.split(":")
        return secrets.compare_digest(_scrypt(secret, bytes.fromhex(salt)), bytes.fromhex(expected))
    if stored.startswith("sha256:"):
        from inspector.service.auth import hash_token

        return secrets.compare_digest(hash_token(secret).encode(), stored.encode())
    return False


def engineers_problem(engineers: dict) -> str | None:
    """What is wrong with a settings file's ``engineers`` (None when nothing), naming the entry."""
    for name, stored in engineers.items():
        if not re.fullmatch(NAME_PATTERN, str(name)):
            return f"engineers: {name!r}: expected 1-64 letters, digits, '_', '.', '@', '-'"
        if not isinstance(stored, str) or not re.fullmatch(HASH_FORMS, stored):
            return (f"engineers: {name}: expected scrypt:<salt>:<hash> (python -m gui.access {name}) or "
                    "sha256:<64 hex> (the service's token hash)")
    return None


class EngineerAccess:
    """The window's engineer session: locked, or unlocked by one engineer until ``expires``."""

    def __init__(self, engineers: dict[str, str], unlock_s: float, clock: Callable[[], float] = time.monotonic):
        self.engineers = dict(engineers)
        self.unlock_s = float(unlock_s)
        self.clock = clock
        self.engineer: str | None = None
        self.expires = 0.0
        self._failures = 0
        self._refused_until = 0.0

    @property
    def unlocked(self) -> bool:
        if self.engineer is not None and self.clock() >= self.expires:
            self.engineer = None  # time is up
        return self.engineer is not None

    def remaining_s(self) -> float:
        return max(0.0, self.expires - self.clock()) if self.unlocked else 0.0

    def unlock(self, name: str, secret: str) -> str:
        """Unlock for ``unlock_s`` seconds; the engineer's name, or AccessDenied with the reason."""
        now = self.clock()
        if now < self._refused_until:
            raise AccessDenied(f"too many wrong PINs: try again in {self._refused_until - now:.0f} s")
        if not self.engineers:
            raise AccessDenied("no engineer PIN is set: python -m gui.access NAME sets one")
        stored = self.engineers.get(name.strip())
        # an unknown name costs a hash too, so the answer's timing does not tell which names exist
        matched = verify_secret(secret, stored if stored is not None else "scrypt:" + "0" * 32 + ":" + "0" * 64)
        if stored is None or not matched:
            self._failures += 1
            if self._failures >= MAX_FAILURES:
                self._failures, self._refused_until = 0, now + LOCKOUT_S
                raise AccessDenied(f"wrong name or PIN ({MAX_FAILURES} in a row: logins refused for "
                                   f"{LOCKOUT_S:.0f} s)")
            raise AccessDenied("wrong name or PIN")
        self._failures = 0
        self.engineer, self.expires = name.strip(), now + self.unlock_s
        return self.engineer

    def lock(self) -> None:
        self.engineer = None
        self.expires = 0.0


def main(argv: list[str]) -> int:
    """``python -m gui.access NAME [--config FILE]``: store the hash of a new PIN for NAME."""
    from gui.settings import default_config_path, load_settings, save_settings

    parser = argparse.ArgumentParser(prog="python -m gui.access", description="Set an engineer's PIN for the "
                                     "operator GUI (only its scrypt hash is stored).")
    parser.add_argument("name")
    parser.add_argument("--config", type=Path, default=None, help="GUI settings file (default: the GUI's own)")
    parser.add_argument("--remove", action="store_true", help="remove NAME instead")
    args = parser.parse_args(argv)
    if not re.fullmatch(NAME_PATTERN, args.name):
        print(f"name {args.name!r}: expected 1-64 letters, digits, '_', '.', '@', '-'", file=sys.stderr)
        return 2
    config = args.config or default_config_path()
    settings, message = load_settings(config)
    if message:
        print(message, file=sys.stderr)
        return 2
    if args.remove:
        settings.engineers.pop(args.name, None)
    else:
        pin = getpass.getpass(f"New PIN for {args.name}: ")
        if pin != getpass.getpass("The same PIN again: "):
            print("the two PINs differ; nothing changed", file=sys.stderr)
            return 2
        try:
            settings.engineers[args.name] = hash_pin(pin)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
    config.parent.mkdir(parents=True, exist_ok=True)
    save_settings(config, settings)
    print(f"{'removed' if args.remove else 'PIN set for'} {args.name} in {config}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
