"""Operators, passwords, sessions and login limits.

* Passwords are argon2id hashes (argon2-cffi, its default parameters); a hash made with older
  parameters is upgraded at the next login.
* A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie (Secure over https); the
  ``console_sessions`` table keeps its SHA-256, the operator, the session's CSRF token and when it was
  last used. A session unused for ``HNPAL_CONSOLE_IDLE_MINUTES`` is deleted at its next use. A disabled
  operator's sessions are deleted at once.
* Failed logins are counted in Redis per operator name and per client address for
  ``HNPAL_CONSOLE_LOGIN_WINDOW`` seconds; past ``HNPAL_CONSOLE_LOGIN_ATTEMPTS`` (name) or
  ``HNPAL_CONSOLE_LOGIN_ADDRESS_ATTEMPTS`` (address) every login of that name or address is refused
  until the window passes, whatever the password. When Redis is down, logins are refused (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.audit.models import AuditLog
from hnpal.console.models import ROLES, ConsoleSession, Operator
from hnpal.errors import HNPalError

_hasher = PasswordHasher()
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
MIN_PASSWORD = 10
RANK = {role: n for n, role in enumerate(ROLES)}
# Verified when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AuthError(HNPalError, ValueError):
    """Bad operator input (the message says what is wrong)."""


class TooManyAttempts(HNPalError):
    """Logins of this name or address are refused for now."""


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS:
        raise AuthError("an operator name is 1-64 characters: letters, digits, '.', '_', '-', '@'")
    return name


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AuthError("a password is at most 1024 characters")
    return password


def add_operator(session: Session, *, name: str, password: str, role: str) -> Operator:
    name = check_name(name)
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if session.scalar(select(Operator.id).where(Operator.name == name)) is not None:
        raise AuthError(f"operator {name!r} exists (use `hnpal operator passwd`)")
    operator = Operator(name=name, password_hash=_hasher.hash(check_password(password)), role=role)
    session.add(operator)
    session.flush()
    session.add(AuditLog(actor_type="operator", action="operator.add", operator=name, details={"role": role}))
    return operator


def _operator(session: Session, name: str) -> Operator:
    operator = session.scalar(select(Operator).where(Operator.name == name.strip()))
    if operator is None:
        raise AuthError(f"no operator {name!r}")
    return operator


def set_password(session: Session, *, name: str, password: str) -> None:
    operator = _operator(session, name)
    operator.password_hash = _hasher.hash(check_password(password))
    operator.password_changed_at = datetime.now(UTC)
    session.execute(delete(ConsoleSession).where(ConsoleSession.operator_id == operator.id))
    session.add(AuditLog(actor_type="operator", action="operator.passwd", operator=operator.name, details={}))


def set_disabled(session: Session, *, name: str, disabled: bool = True) -> None:
    operator = _operator(session, name)
    operator.disabled = disabled
    if disabled:
        session.execute(delete(ConsoleSession).where(ConsoleSession.operator_id == operator.id))
    action = "operator.disable" if disabled else "operator.enable"
    session.add(AuditLog(actor_type="operator", action=action, operator=operator.name, details={}))


# --- login limits --------------------------------------------------------------------------------------


def _redis(settings: Settings) -> redis.Redis:
    from hnpal.state.store import get_redis

    return get_redis()


def _keys(settings: Settings, name: str, address: str) -> tuple[str, str]:
    digest = hashlib.sha256(name.strip().lower().encode()).hexdigest()[:32]
    prefix = settings.redis_key_prefix
    return f"{prefix}console:login:name:{digest}", f"{prefix}console:login:addr:{address}"


def check_attempts(name: str, address: str, settings: Settings | None = None) -> None:
    """Raise TooManyAttempts when this name or address used up its failed logins (or Redis is down)."""
    settings = settings or get_settings()
    by_name, by_address = _keys(settings, name, address)
    try:
        counts = _redis(settings).mget([by_name, by_address])
    except (redis.RedisError, OSError) as exc:
        raise TooManyAttempts("login is unavailable: the attempt counter (Redis) does not answer") from exc
    name_count, address_count = (int(c or 0) for c in counts)
    if name_count >= settings.console_login_attempts or address_count >= settings.console_login_address_attempts:
        raise TooManyAttempts("too many failed logins: wait a while and try again")


def record_failure(name: str, address: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    try:
        pipe = _redis(settings).pipeline()
        for key in _keys(settings, name, address):
            pipe.incr(key)
            pipe.expire(key, settings.console_login_window, nx=True)
        pipe.execute()
    except (redis.RedisError, OSError):
        pass  # the next check fails closed anyway


def clear_failures(name: str, address: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    try:
        _redis(settings).delete(_keys(settings, name, address)[0])
    except (redis.RedisError, OSError):
        pass


# --- sessions ------------------------------------------------------------------------------------------


@dataclass
class Principal:
    operator_id: int
    name: str
    role: str
    csrf: str
    token_hash: str

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(session: Session, *, name: str, password: str, address: str) -> Operator | None:
    """The operator when the name and password match an enabled operator; None otherwise (counted)."""
    check_attempts(name, address)
    operator = session.scalar(select(Operator).where(Operator.name == (name or "").strip()))
    try:
        _hasher.verify(operator.password_hash if operator else _DUMMY_HASH, password or "")
        ok = operator is not None and not operator.disabled
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok:
        record_failure(name, address)
        session.add(
            AuditLog(
                actor_type="operator",
                action="console.login_failed",
                operator=(name or "")[:64],
                details={"address": address},
            )  # fmt: skip
        )
        return None
    assert operator is not None
    clear_failures(name, address)
    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = _hasher.hash(password)
    operator.last_login_at = datetime.now(UTC)
    return operator


def open_session(session: Session, operator: Operator, address: str) -> str:
    """A new session for the operator; returns the cookie's token."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=_hash(token), operator_id=operator.id, csrf=secrets.token_urlsafe(32), address=address[:64]
        )  # fmt: skip
    )
    session.add(AuditLog(actor_type="operator", action="console.login", operator=operator.name,
                         details={"address": address}))  # fmt: skip
    return token


def resolve(session: Session, token: str | None, settings: Settings | None = None) -> Principal | None:
    """The signed-in operator for a cookie's token, its idle clock reset; None when there is none, it is
    idle past the limit (deleted) or the operator is disabled."""
    if not token or len(token) > 100:
        return None
    settings = settings or get_settings()
    token_hash = _hash(token)
    cutoff = datetime.now(UTC) - timedelta(minutes=settings.console_idle_minutes)
    row = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == token_hash, ConsoleSession.last_seen_at > cutoff)
        .values(last_seen_at=datetime.now(UTC))
        .returning(ConsoleSession.operator_id, ConsoleSession.csrf)
    ).first()
    if row is None:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))
        return None
    operator = session.get(Operator, row.operator_id)
    if operator is None or operator.disabled:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))
        return None
    return Principal(operator.id, operator.name, operator.role, row.csrf, token_hash)


def close_session(session: Session, principal: Principal) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == principal.token_hash))
    session.add(AuditLog(actor_type="operator", action="console.logout", operator=principal.name, details={}))


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
