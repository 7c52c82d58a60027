"""Operator commands in the chat: ``/admin``, ``/admin stats``, ``/admin quarantine``,
``/admin retry UPDATE_ID``.

Only the Telegram ids in ``HNPAL_ADMIN_IDS`` may use them. Anyone else gets exactly the reply of an
unknown command, so the chat does not reveal that admin commands exist. Every admin action is written to
``audit_log`` (``actor_type`` admin, ``actor_id`` the admin's users.id); a retried update's task is
enqueued after the commit (``ctx.jobs``). The figures come from the same collectors as the Prometheus
metrics (:mod:`hnpal.ops.metrics`) and the quarantine logic of ``hnpal quarantine``
(:mod:`hnpal.ops.quarantine`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select

from config.settings import get_settings
from hnpal.audit.models import AuditLog
from hnpal.ops import quarantine
from hnpal.telegram.context import Ctx
from hnpal.telegram.render import esc, shorten
from hnpal.telegram.texts import unknown_command
from hnpal.users.models import User

log = logging.getLogger(__name__)

ADMIN_HELP = (
    "<b>Admin</b>\n\n"
    "/admin stats — users, posts, queues, quarantine, today's LLM spend\n"
    "/admin quarantine — the latest quarantined updates and their errors\n"
    "/admin retry UPDATE_ID — hand a quarantined update to the worker again"
)
LISTED = 10  # quarantined updates shown by /admin quarantine
ERROR_CHARS = 200


def is_admin(telegram_id: int) -> bool:
    return telegram_id in set(get_settings().admin_ids)


def _unknown(ctx: Ctx, text: str) -> None:
    """What anyone else hears: the router's own unknown-command reply."""
    command = text.split()[0][1:].split("@")[0].lower()
    ctx.out.send(ctx.chat_id, unknown_command(command))


def _audit(ctx: Ctx, user: User, action: str, **details: Any) -> None:
    ctx.session.add(AuditLog(actor_type="admin", actor_id=user.id, action=action, details=details))


def cmd_admin(ctx: Ctx, user: User, text: str) -> None:
    if not is_admin(ctx.telegram_id):
        _unknown(ctx, text)
        return
    parts = text.split()
    sub = parts[1].lower() if len(parts) > 1 else ""
    if sub == "stats":
        ctx.out.send(ctx.chat_id, _stats(ctx))
        _audit(ctx, user, "admin_stats")
    elif sub == "quarantine":
        ctx.out.send(ctx.chat_id, _quarantine(ctx))
        _audit(ctx, user, "admin_quarantine_list")
    elif sub == "retry":
        _retry(ctx, user, parts[2] if len(parts) == 3 else "")
    else:
        ctx.out.send(ctx.chat_id, ADMIN_HELP)
        _audit(ctx, user, "admin_help")


def _stats(ctx: Ctx) -> str:
    from hnpal.llm.service import spent_today
    from hnpal.ops.metrics import PipelineCollector

    users = ctx.session.execute(select(User.status, func.count()).group_by(User.status).order_by(User.status)).all()
    figures: dict[str, dict[str, float]] = {}
    for metric in PipelineCollector().collect():  # PostgreSQL (committed rows) and Redis, as a scrape does
        if metric.name in ("hnpal_posts", "hnpal_queue_depth", "hnpal_telegram_updates", "hnpal_metrics_up"):
            for sample in metric.samples:
                label = next(iter(sample.labels.values()), "")
                figures.setdefault(metric.name, {})[label] = sample.value

    def line(values: dict[str, float]) -> str:
        return " · ".join(f"{esc(k)} {int(v)}" for k, v in sorted(values.items())) or "—"

    queues = figures.get("hnpal_queue_depth")
    return "\n".join(
        [
            "<b>HN Pal stats</b>",
            "",
            f"Users: {line({s: n for s, n in users})}",
            f"Posts by crawl status: {line(figures.get('hnpal_posts', {}))}",
            f"Queue depths: {line(queues) if queues is not None else 'Redis unavailable'}",
            f"Quarantined updates: {int(figures.get('hnpal_telegram_updates', {}).get('quarantined', 0))}",
            f"LLM spend today: ${spent_today():.4f}",
        ]
    )


def _quarantine(ctx: Ctx) -> str:
    items = quarantine.list_failed(session=ctx.session, kind="update", limit=LISTED)
    if not items:
        return "No quarantined updates."
    lines = [f"<b>Quarantined updates</b> (latest {len(items)})", ""]
    for item in items:
        when = f"{item.when:%Y-%m-%d %H:%M}" if item.when else "?"
        lines.append(f"<code>{item.id}</code> · {when} · {esc(item.detail)}")
        lines.append(f"  {esc(shorten(item.error or '(no error recorded)', ERROR_CHARS))}")
    lines += ["", "/admin retry UPDATE_ID hands one to the worker again."]
    return "\n".join(lines)


def _retry(ctx: Ctx, user: User, arg: str) -> None:
    if not (arg.isascii() and arg.isdigit()):
        ctx.out.send(ctx.chat_id, "Send /admin retry with the update's id, for example /admin retry 812.")
        return
    try:
        job = quarantine.retry(session=ctx.session, ref=f"update:{arg}")
    except quarantine.QuarantineError as exc:
        ctx.out.send(ctx.chat_id, f"⚠️ {esc(str(exc))}")
        return
    ctx.jobs.enqueue(job.task, *job.args)
    _audit(ctx, user, "admin_retry", update_id=int(arg))
    ctx.out.send(ctx.chat_id, f"Update {int(arg)} is queued again.")
    log.info("admin %s retried update %s", ctx.telegram_id, arg)
