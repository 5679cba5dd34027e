"""Dashboard accounts: create them, check passwords, and slow down password guessing.

Passwords are kept only as werkzeug hashes (scrypt). Failed logins are counted per
account and per client address in this process: every failure answers a little
later than the one before, and past a few failures the account (or address) is
locked for a while that doubles with each further failure. Counting in memory keeps
the database out of an attacker's reach; each worker of a multi-worker deployment
counts on its own, which still bounds guessing to a handful of tries per minute.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.errors import Conflict, InvalidRequest, NotFound
from webapp.extensions import db
from webapp.models import User, utcnow

log = logging.getLogger("gateway.auth")

ROLES = ("admin",)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
USERNAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
# Compared against when the account does not exist, so both cases take as long.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def _check_username(username: str) -> str:
    name = username.strip()
    if not USERNAME_RE.match(name):
        raise InvalidRequest(
            "the user name must be 1-64 letters, digits or . _ @ -", param="username"
        )
    return name


def _check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"the password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            param="password",
        )
    return password


def count() -> int:
    """How many accounts exist."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(User)) or 0


def get(user_id: str) -> User | None:
    """The account with this id (as Flask-Login stores it), or None."""
    try:
        return db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None


def find(username: str) -> User | None:
    """The account with this user name, or None."""
    return db.session.scalar(sa.select(User).where(User.username == username.strip()))


def create_user(username: str, password: str, role: str = "admin") -> User:
    """Store a new account; the name must be free and the password long enough."""
    name = _check_username(username)
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if find(name) is not None:
        raise Conflict(f'a user named "{name}" exists already', param="username")
    user = User(username=name, password_hash=generate_password_hash(_check_password(password)))
    user.role = role
    db.session.add(user)
    db.session.commit()
    log.info("created user %s (role %s)", name, role)
    return user


def set_password(username: str, password: str) -> User:
    """Replace an account's password."""
    user = find(username)
    if user is None:
        raise NotFound(f'no user named "{username.strip()}"', param="username")
    user.password_hash = generate_password_hash(_check_password(password))
    db.session.commit()
    log.info("password changed for user %s", user.username)
    return user


def authenticate(username: str, password: str) -> User | None:
    """The account if the password is right, else None (equally slow either way)."""
    user = find(username) if USERNAME_RE.match(username.strip()) else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    db.session.commit()
    return user


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Per-account and per-address failure counters with growing delays and lockouts.

    ``free`` failures are only slowed down (``step`` seconds more per failure, at most
    ``max_delay``); the next ones lock the key for ``lock_base`` seconds, doubling each
    time up to ``lock_max``. A key is forgotten ``forget_after`` seconds after its last
    failure, and an account's count ends with a successful login.
    """

    def __init__(
        self,
        *,
        free_per_user: int = 3,
        free_per_address: int = 20,
        step: float = 0.2,
        max_delay: float = 2.0,
        lock_base: float = 15.0,
        lock_max: float = 900.0,
        forget_after: float = 900.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = {"user": free_per_user, "addr": free_per_address}
        self.step = step
        self.max_delay = max_delay
        self.lock_base = lock_base
        self.lock_max = lock_max
        self.forget_after = forget_after
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str) -> list[tuple[str, str]]:
        return [("user", username.strip().lower()[:64]), ("addr", address)]

    def _entry(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last > self.forget_after:
            del self._entries[key]
            return None
        return entry

    def retry_after(self, username: str, address: str) -> float:
        """Seconds before this account may be tried again from this address (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [
                entry.locked_until - now
                for key in self._keys(username, address)
                if (entry := self._entry(key, now)) is not None
            ]
        return max([0.0, *waits])

    def failed(self, username: str, address: str) -> float:
        """Count a failed login; return how long to hold back the answer."""
        now = self.clock()
        delay = 0.0
        with self._lock:
            for key in self._keys(username, address):
                entry = self._entry(key, now) or _Failures()
                entry.count += 1
                entry.last = now
                over = entry.count - self.free[key[0]]
                if over > 0:
                    lock = min(self.lock_base * 2 ** (over - 1), self.lock_max)
                    entry.locked_until = now + lock
                self._entries[key] = entry
                self._entries.move_to_end(key)
                delay = max(delay, min(self.step * entry.count, self.max_delay))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return delay

    def succeeded(self, username: str) -> None:
        """Forget an account's failures after a good login (the address keeps its count)."""
        with self._lock:
            self._entries.pop(self._keys(username, "")[0], None)
