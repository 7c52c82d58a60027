"""The base of the errors HN Pal raises on purpose, and the ones several domains share.

Every domain's own errors (``LLMError``, ``ExtractionError``, ``ContentStoreError``...) subclass
``HNPalError`` too, keeping any built-in base their callers catch (``ValueError``, ``PermissionError``).
"""

from __future__ import annotations


class HNPalError(Exception):
    """An error HN Pal raises on purpose (not a bug): ``except HNPalError`` catches every one."""


class Busy(HNPalError):
    """Another worker holds this piece of work right now (an answer in a conversation, a summary being
    generated); try again shortly: it will be done."""


class NotYours(HNPalError, PermissionError):
    """A user named a row (a delivery, a memory item) that does not exist or belongs to another user."""
