"""The console's pages: the review queue and items, users, costs, the pipeline, review analytics, tags."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from config.settings import get_settings
from hnpal import jobs
from hnpal.console.pages import Ctx, view
from hnpal.review import service as review
from hnpal.review.models import EditTag, ReviewItem
from hnpal.users.models import User

log = logging.getLogger(__name__)
PAGE = 50


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _back(path: str, note: str | None = None) -> Response:
    from urllib.parse import quote

    return RedirectResponse(path + (f"?note={quote(note)}" if note else ""), status_code=303)


# --- the review queue --------------------------------------------------------------------------------

QUEUE_SQL = text(
    """
    SELECT r.id, r.kind, r.reason, r.created_at, r.due_at, r.model, r.cost_usd, left(r.draft, 240) AS draft,
           r.user_id, u.username, u.first_name, p.title, p.hn_id
    FROM (SELECT * FROM review_items WHERE status = 'pending' AND (CAST(:kind AS text) IS NULL OR kind = :kind)
          ORDER BY created_at, id LIMIT :limit OFFSET :offset) r
    LEFT JOIN users u ON u.id = r.user_id
    LEFT JOIN posts p ON p.id = r.post_id
    ORDER BY r.created_at, r.id
    """
)
QUEUE_COUNTS_SQL = text("SELECT kind, count(*) FROM review_items WHERE status = 'pending' GROUP BY kind")


@view()
def queue(ctx: Ctx) -> Response:
    kind = ctx.request.query_params.get("kind")
    kind = kind if kind in ("summary", "answer") else None
    page = max(0, _int(ctx.request.query_params.get("page"), 0) or 0)
    items = ctx.session.execute(QUEUE_SQL, {"kind": kind, "limit": PAGE, "offset": page * PAGE}).mappings().all()
    counts = dict(ctx.session.execute(QUEUE_COUNTS_SQL).all())
    return ctx.page("queue.html", items=items, counts=counts, kind=kind, page=page, per_page=PAGE,
                    note=ctx.request.query_params.get("note"))  # fmt: skip


def _content_text(hn_id: int | None) -> str | None:
    if hn_id is None:
        return None
    try:
        from hnpal.content.host import reader

        store = reader()
        value = store.get_text(hn_id, "text")
        return value[:20000] if isinstance(value, str) else None
    except Exception as exc:  # noqa: BLE001 - the page shows the rest
        log.info("content of %s not readable here: %s", hn_id, exc)
        return None


@view()
def item(ctx: Ctx) -> Response:
    item_id = _int(ctx.request.path_params["item_id"])
    row = ctx.session.get(ReviewItem, item_id) if item_id else None
    if row is None:
        return ctx.page("error.html", 404, message="No such review item.")
    user = ctx.session.get(User, row.user_id) if row.user_id else None
    post = None
    if row.post_id:
        post = ctx.session.execute(
            text("SELECT id, hn_id, title, url, domain, score, summary_basis, crawl_status FROM posts WHERE id = :p"),
            {"p": row.post_id},
        ).mappings().first()  # fmt: skip
    sent = ctx.session.execute(
        text("SELECT status, sent_at, attempts FROM review_sends WHERE review_id = :r"), {"r": row.id}
    ).mappings().first()  # fmt: skip
    article = _content_text(post["hn_id"]) if post is not None and ctx.principal.can("reviewer") else None
    return ctx.page("item.html", item=row, user=user, post=post, sent=sent, article=article,
                    tags=review.tag_names(ctx.session), error=None)  # fmt: skip


@view("reviewer")
def decide(ctx: Ctx) -> Response:
    item_id = _int(ctx.request.path_params["item_id"]) or 0
    action = ctx.form.get("action", "")
    try:
        with ctx.session.begin_nested():
            decision = review.decide(
                ctx.session, item_id=item_id, operator=ctx.principal.name, action=action,
                edited=ctx.form.get("text"), tags=ctx.form_list("tags"),
            )  # fmt: skip
    except review.ReviewError as exc:
        row = ctx.session.get(ReviewItem, item_id)
        if row is None:
            return ctx.page("error.html", 404, message=str(exc))
        user = ctx.session.get(User, row.user_id) if row.user_id else None
        return ctx.page("item.html", 409, item=row, user=user, post=None, sent=None, article=None,
                        tags=review.tag_names(ctx.session), error=str(exc))  # fmt: skip
    if decision.send_id is not None:
        jobs.enqueue(ctx.session, jobs.REVIEW_SEND, decision.send_id)
    return _back("/queue", f"item {item_id}: {decision.status}")


# --- edit tags --------------------------------------------------------------------------------------


@view()
def tags(ctx: Ctx) -> Response:
    rows = ctx.session.execute(select(EditTag).order_by(EditTag.id)).scalars().all()
    return ctx.page("tags.html", rows=rows, note=ctx.request.query_params.get("note"))


@view("admin")
def add_tag(ctx: Ctx) -> Response:
    name = " ".join(ctx.form.get("name", "").split())[:64]
    if not name:
        return _back("/tags", "a tag needs a name")
    from sqlalchemy.dialects.postgresql import insert

    from hnpal.audit.models import AuditLog

    ctx.session.execute(insert(EditTag).values(name=name, created_by=ctx.principal.name).on_conflict_do_nothing())
    ctx.session.add(AuditLog(actor_type="operator", action="review.tag_add", operator=ctx.principal.name,
                             details={"tag": name}))  # fmt: skip
    return _back("/tags", f"tag {name} added")


# --- users ------------------------------------------------------------------------------------------


@view()
def users(ctx: Ctx) -> Response:
    q = (ctx.request.query_params.get("q") or "").strip()[:100]
    found: list[Any] = []
    if q:
        number = _int(q.lstrip("#"))
        if number is not None:
            found = ctx.session.execute(
                text("SELECT id, telegram_id, username, first_name, status FROM users "
                     "WHERE telegram_id = :n OR id = :n ORDER BY id LIMIT 20"), {"n": number}
            ).mappings().all()  # fmt: skip
        elif ctx.principal.can("reviewer"):  # searching by name is reading personal data
            name = q.lstrip("@")
            like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            found = ctx.session.execute(
                text("SELECT id, telegram_id, username, first_name, status FROM users "
                     "WHERE lower(username) = lower(:q) OR lower(username) LIKE lower(:p) ESCAPE '\\' "
                     "ORDER BY id LIMIT 20"),
                {"q": name, "p": like},
            ).mappings().all()  # fmt: skip
    protocol = ctx.session.execute(
        text("SELECT p.user_id, p.under_review, p.silenced, p.silence_reason, p.review_reason, u.username, "
             "u.first_name FROM user_protocol p JOIN users u ON u.id = p.user_id "
             "WHERE p.under_review OR p.silenced ORDER BY p.updated_at DESC LIMIT 50")
    ).mappings().all()  # fmt: skip
    return ctx.page("users.html", q=q, found=found, protocol=protocol)


USER_STATS_SQL = text(
    """
    SELECT
      (SELECT count(*) FROM digests WHERE user_id = :u) AS digests,
      (SELECT count(*) FROM deliveries WHERE user_id = :u) AS deliveries,
      (SELECT count(*) FROM deliveries WHERE user_id = :u AND reaction IS NOT NULL) AS reactions,
      (SELECT count(*) FROM conversations WHERE user_id = :u) AS conversations,
      (SELECT count(*) FROM memory WHERE user_id = :u AND active) AS memory_active,
      (SELECT count(*) FROM memory WHERE user_id = :u) AS memory_all,
      (SELECT coalesce(sum(total_input_tokens + total_output_tokens), 0) FROM user_token_usage WHERE user_id = :u)
        AS tokens,
      (SELECT coalesce(sum(total_cost_usd), 0) FROM user_token_usage WHERE user_id = :u) AS cost_usd,
      (SELECT count(*) FROM review_items WHERE user_id = :u AND status = 'pending') AS pending_reviews
    """
)


USER_DIGESTS_SQL = text(
    "SELECT batch_id, status, post_count, created_at, sent_at FROM digests WHERE user_id = :u "
    "ORDER BY created_at DESC LIMIT 10"
)
USER_CONVERSATIONS_SQL = text(
    "SELECT c.id, p.title, c.started_at, c.ended_at, jsonb_array_length(c.messages) AS messages, "
    "c.total_cost_usd FROM conversations c JOIN posts p ON p.id = c.post_id WHERE c.user_id = :u "
    "ORDER BY c.started_at DESC LIMIT 10"
)
USER_HELD_SQL = text(
    "SELECT id, text, received_at, expires_at, status FROM quarantine_messages WHERE user_id = :u "
    "ORDER BY id DESC LIMIT 20"
)
USER_AUDIT_SQL = text(
    "SELECT action, operator, actor_type, created_at FROM audit_log WHERE subject_user_id = :u "
    "ORDER BY created_at DESC LIMIT 20"
)
USER_PAGE_SQL = (USER_STATS_SQL, USER_DIGESTS_SQL, USER_CONVERSATIONS_SQL, USER_HELD_SQL, USER_AUDIT_SQL)


@view()
def user_page(ctx: Ctx) -> Response:
    user_id = _int(ctx.request.path_params["user_id"])
    user = ctx.session.get(User, user_id) if user_id else None
    if user is None:
        return ctx.page("error.html", 404, message="No such user.")
    stats = ctx.session.execute(USER_STATS_SQL, {"u": user.id}).mappings().one()
    digests = ctx.session.execute(USER_DIGESTS_SQL, {"u": user.id}).mappings().all()
    conversations = ctx.session.execute(USER_CONVERSATIONS_SQL, {"u": user.id}).mappings().all()
    held = ctx.session.execute(USER_HELD_SQL, {"u": user.id}).mappings().all()
    audit = ctx.session.execute(USER_AUDIT_SQL, {"u": user.id}).mappings().all()
    protocol = review.protocol(ctx.session, user.id)
    return ctx.page("user.html", user=user, stats=stats, digests=digests, conversations=conversations, held=held,
                    audit=audit, protocol=protocol, note=ctx.request.query_params.get("note"))  # fmt: skip


def _user(ctx: Ctx) -> User | None:
    user_id = _int(ctx.request.path_params["user_id"])
    return ctx.session.get(User, user_id) if user_id else None


@view("reviewer")
def user_action(ctx: Ctx) -> Response:
    user = _user(ctx)
    if user is None:
        return ctx.page("error.html", 404, message="No such user.")
    action = ctx.request.path_params["action"]
    path = f"/users/{user.id}"
    name = ctx.principal.name
    try:
        if action == "review":
            on = ctx.form.get("on") == "1"
            review.set_review(ctx.session, user_id=user.id, operator=name, on=on, reason=ctx.form.get("reason", ""))
            return _back(path, "under review" if on else "review ended")
        if action == "silence":
            until = None
            hours = _int(ctx.form.get("hours"))
            if hours:
                until = datetime.now(UTC) + timedelta(hours=max(1, min(hours, 24 * 365)))
            review.silence(ctx.session, user_id=user.id, operator=name, reason=ctx.form.get("reason", ""),
                           until=until)  # fmt: skip
            return _back(path, "silenced")
        if action == "unsilence":
            held = ctx.form.get("held", "")
            count = review.unsilence(ctx.session, user_id=user.id, operator=name, held=held)
            if held == "process" and count:
                jobs.enqueue(ctx.session, jobs.REVIEW_RELEASE, user.id)
            return _back(
                path, f"silence lifted; {count} held message(s) {'processed' if held == 'process' else 'dropped'}"
            )
        if action == "export":
            from hnpal.privacy import service as privacy

            fmt = "json" if ctx.form.get("format") == "json" else "md"
            filename, body = privacy.export(session=ctx.session, user=user, fmt=fmt, actor_type="operator",
                                            operator=name)  # fmt: skip
            media = "application/json" if fmt == "json" else "text/markdown"
            return Response(body, media_type=media,
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip
        if action == "delete":
            if not ctx.principal.can("admin"):
                return ctx.page("error.html", 403, message="Deleting an account needs the admin role.")
            from hnpal.privacy import service as privacy
            from hnpal.state.store import StateStore

            purge_on = privacy.delete_account(session=ctx.session, store=StateStore(), user=user, operator=name)
            return _back(path, f"account deleted; purged on {purge_on:%Y-%m-%d} unless the user comes back")
    except review.ReviewError as exc:
        return _back(path, str(exc))
    return ctx.page("error.html", 404, message="No such action.")


# --- costs --------------------------------------------------------------------------------------------

COSTS_SQL = text(
    """
    SELECT day, model, agent_type, calls, input_tokens, output_tokens, cost_usd
    FROM llm_cost_daily WHERE day >= :since ORDER BY day DESC, cost_usd DESC
    """
)
# The top spenders of the last ``:days`` UTC days: one day reads the (date, cost) index; more days
# aggregate every user's rows of those days (slower on a large table, on request only).
TOP_USERS_SQL = text(
    """
    SELECT t.user_id, u.username, u.first_name, t.tokens, t.cost_usd FROM (
      SELECT user_id, sum(total_input_tokens + total_output_tokens) AS tokens, sum(total_cost_usd) AS cost_usd
      FROM user_token_usage WHERE date >= :since_day GROUP BY user_id ORDER BY 3 DESC LIMIT 20) t
    JOIN users u ON u.id = t.user_id ORDER BY t.cost_usd DESC
    """
)
TOP_TODAY_SQL = text(
    """
    SELECT t.user_id, u.username, u.first_name, t.total_input_tokens + t.total_output_tokens AS tokens,
           t.total_cost_usd AS cost_usd
    FROM (SELECT * FROM user_token_usage WHERE date = :day ORDER BY total_cost_usd DESC LIMIT 20) t
    JOIN users u ON u.id = t.user_id ORDER BY t.total_cost_usd DESC
    """
)
SPENT_SQL = text("SELECT coalesce(sum(cost_usd), 0) FROM agent_calls WHERE called_at >= :t")
HELD_COST_SQL = text("SELECT coalesce(sum(cost_usd), 0), count(*) FROM review_items WHERE created_at >= :s")
PURPOSES = {"summarization": "summaries", "discussion": "discussions", "memory_extraction": "memory"}


@view()
def costs(ctx: Ctx) -> Response:
    settings = get_settings()
    days = max(1, min(_int(ctx.request.query_params.get("days"), 14) or 14, 90))
    now = datetime.now(UTC)
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = ctx.session.execute(COSTS_SQL, {"since": since.date()}).mappings().all()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent = ctx.session.execute(SPENT_SQL, {"t": today}).scalar()
    held = ctx.session.execute(HELD_COST_SQL, {"s": since}).one()
    top_days = max(1, min(_int(ctx.request.query_params.get("top_days"), 1) or 1, 90))
    if top_days == 1:
        top = ctx.session.execute(TOP_TODAY_SQL, {"day": today.date()}).mappings().all()
    else:
        top_since = (today - timedelta(days=top_days - 1)).date()
        top = ctx.session.execute(TOP_USERS_SQL, {"since_day": top_since}).mappings().all()
    budget = settings.llm_daily_budget_usd
    share = float(Decimal(spent) / budget) if budget else 0.0
    return ctx.page("costs.html", rows=rows, days=days, spent=spent, budget=budget, share=share, top=top,
                    top_days=top_days, held_cost=held[0], held_count=held[1], purposes=PURPOSES)  # fmt: skip


# --- the pipeline -------------------------------------------------------------------------------------


@view()
def pipeline(ctx: Ctx) -> Response:
    from hnpal.ops import quarantine
    from hnpal.ops.metrics import PipelineCollector

    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        for family in PipelineCollector().collect():
            for sample in family.samples:
                metrics.setdefault(sample.name, []).append((sample.labels, sample.value))
    except Exception as exc:  # noqa: BLE001 - the page shows what it can
        log.warning("pipeline metrics unavailable: %s", exc)
    failed = quarantine.list_failed(session=ctx.session, limit=20)
    held = ctx.session.execute(
        text("SELECT status, count(*) FROM quarantine_messages GROUP BY status ORDER BY status")
    ).all()  # fmt: skip
    sends = ctx.session.execute(text("SELECT status, count(*) FROM review_sends GROUP BY status ORDER BY status")).all()
    settings = get_settings()
    flower = settings.flower_url or f"http://{settings.flower_address}:{settings.flower_port}"
    return ctx.page("pipeline.html", metrics=metrics, failed=failed, held=held, sends=sends, flower=flower)


# --- review analytics -------------------------------------------------------------------------------

LATENCY_SQL = text(
    """
    SELECT kind, count(*) AS decided,
      percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS p50,
      percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS p95,
      count(*) FILTER (WHERE status = 'approved') AS approved,
      count(*) FILTER (WHERE status = 'edited') AS edited,
      count(*) FILTER (WHERE status = 'rejected') AS rejected,
      count(*) FILTER (WHERE decided_by = 'timeout') AS timed_out
    FROM review_items WHERE decided_at >= :since GROUP BY kind ORDER BY kind
    """
)
TAGS_SQL = text(
    """
    SELECT date_trunc('week', decided_at)::date AS week, coalesce(model, '?') AS model, tag, count(*) AS n
    FROM review_items, unnest(tags) AS tag
    WHERE decided_at >= :since AND status = 'edited'
    GROUP BY 1, 2, 3 ORDER BY 1 DESC, 4 DESC
    """
)


@view()
def analytics(ctx: Ctx) -> Response:
    since = datetime.now(UTC) - timedelta(days=max(1, min(_int(ctx.request.query_params.get("days"), 56) or 56, 365)))
    latency = ctx.session.execute(LATENCY_SQL, {"since": since}).mappings().all()
    tag_rows = ctx.session.execute(TAGS_SQL, {"since": since}).mappings().all()
    return ctx.page("analytics.html", latency=latency, tag_rows=tag_rows)


def routes() -> list[Route]:
    return [
        Route("/queue", queue),
        Route("/review/{item_id}", item),
        Route("/review/{item_id}/decide", decide, methods=["POST"]),
        Route("/tags", tags),
        Route("/tags/add", add_tag, methods=["POST"]),
        Route("/users", users),
        Route("/users/{user_id}", user_page),
        Route("/users/{user_id}/{action}", user_action, methods=["POST"]),
        Route("/costs", costs),
        Route("/pipeline", pipeline),
        Route("/analytics", analytics),
    ]
