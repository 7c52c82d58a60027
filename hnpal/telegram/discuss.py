"""Discussions about one post (issue 6): /discuss, /done, the 💬 button and free text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hnpal.state.store import FsmState
    from hnpal.telegram.service import Ctx
    from hnpal.users.models import User


def on_text(ctx: Ctx, user: User, text: str, state: FsmState) -> None:
    ctx.out.send(ctx.chat_id, "Send a command, for example /digest. /help lists them all.")


def on_idle_text(ctx: Ctx, user: User, text: str) -> None:
    ctx.out.send(ctx.chat_id, "Send a command, for example /digest. /help lists them all.")


COMMANDS: dict[str, Any] = {}
BUTTONS: dict[str, Any] = {}
