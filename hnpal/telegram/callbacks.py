"""Signed button data.

Telegram gives a bot at most 64 bytes of ``callback_data`` per button and returns them verbatim with
the press, from whoever pressed. So every payload carries a MAC over the payload *and the Telegram id
of the user it was made for*: a payload copied into another account, altered, or invented fails the
check, and the handlers also check that the row it names belongs to the presser. A user pressing their
own button again (a replay) only repeats what that button does, which handlers make idempotent or a
toggle.

Format: ``<action>:<arg>[:<arg>...]~<mac>``, the MAC being 8 URL-safe base64 characters (48 bits) of
HMAC-SHA256 with the callback secret (setting, or derived from the bot token).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass

from config.settings import Settings, get_settings

MAX_BYTES = 64
MAC_CHARS = 8


class BadCallback(ValueError):
    """Button data that is malformed, too long, or not signed for this user."""


@dataclass(frozen=True)
class Callback:
    action: str
    args: tuple[str, ...]

    def arg(self, index: int, default: str | None = None) -> str:
        if index < len(self.args):
            return self.args[index]
        if default is None:
            raise BadCallback(f"{self.action}: missing argument {index}")
        return default

    def int_arg(self, index: int) -> int:
        try:
            return int(self.arg(index))
        except ValueError:
            raise BadCallback(f"{self.action}: argument {index} is not a number") from None


def _secret(settings: Settings) -> bytes:
    if settings.telegram_callback_secret is not None:
        return settings.telegram_callback_secret.get_secret_value().encode()
    token = settings.telegram_token.get_secret_value() if settings.telegram_token else "hnpal-unconfigured"
    return _derived_secret(token)


@functools.lru_cache(maxsize=8)
def _derived_secret(token: str) -> bytes:
    return hashlib.sha256(b"hnpal-callback:" + token.encode()).digest()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC with the key already absorbed; each MAC starts from a copy (a brief digest signs ten
    buttons per message, so the key schedule is not redone each time)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(payload: str, telegram_id: int, settings: Settings) -> str:
    mac = _keyed(_secret(settings)).copy()
    mac.update(f"{telegram_id}|{payload}".encode())
    return base64.urlsafe_b64encode(mac.digest()).decode()[:MAC_CHARS]


def sign(telegram_id: int, action: str, *args: object, settings: Settings | None = None) -> str:
    """Button data for ``action`` that only ``telegram_id`` can use."""
    settings = settings or get_settings()
    parts = [action, *(str(a) for a in args)]
    if any(":" in p or "~" in p for p in parts):
        raise ValueError(f"callback parts may not contain ':' or '~': {parts}")
    payload = ":".join(parts)
    data = f"{payload}~{_mac(payload, telegram_id, settings)}"
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    return data


def verify(telegram_id: int, data: str | None, settings: Settings | None = None) -> Callback:
    """The callback a button press means, or BadCallback when it was not made for this user."""
    settings = settings or get_settings()
    if not data or not isinstance(data, str) or len(data.encode()) > MAX_BYTES or "~" not in data:
        raise BadCallback("malformed button data")
    payload, _, mac = data.rpartition("~")
    # bytes: compare_digest refuses str with non-ASCII characters (forged data may hold any)
    if not hmac.compare_digest(mac.encode(), _mac(payload, telegram_id, settings).encode()):
        raise BadCallback("button data not signed for this user")
    action, *args = payload.split(":")
    return Callback(action, tuple(args))
