"""What a day costs with the default settings: HN requests, pages fetched, model calls and dollars.

Measured per unit on HN Pal's own code against the sandboxes (no network), then multiplied by the
default schedule and by the volume of Hacker News:

* HN requests: one scheduled list fetch (``hnpal.ingest.service.fetch_lists`` with HNPAL_HN_LISTS and
  HNPAL_HN_LIST_LIMIT) against the sandbox HN API, counting requests per list and per listed item; one
  refresh per post (``refresh_recent``); one comment thread (``fetch_comments``, HNPAL_COMMENTS_DEPTH and
  HNPAL_COMMENTS_MAX) per post with comments;
* pages: each story with a URL is fetched once (``hnpal.crawl.fetch.Fetcher``; redirects counted);
* the model: each post's default summary through ``hnpal.summaries.service.summarize`` with the paid
  provider (the sandbox model answering as ``HNPAL_OPENAI_MODEL``, priced by the default table), the
  question of what the post is about that comes with every post's summary, the offline summarizer's too
  (``hnpal.relevance.labels``, HNPAL_LLM_TOPICS), and a comment summary for threads of
  HNPAL_COMMENTS_SUMMARY_MIN comments or more: tokens and dollars from the agent_calls rows.

HN's volume is not something a sandbox can measure, so it is an input, stated in the output:
``--stories-per-day`` (default 1,300 new stories a day), ``--listed`` (distinct ids a fetch of the six
default lists reads, default 450 of the 600 it may take) and ``--paid-share`` (share of new posts that
reach HNPAL_LLM_PAID_MIN_SCORE points within the digest look-back: a few have them when they are first
summarized, right after their crawl; the summary sweep makes the others' summaries again with the model
once they rise to it; default 0.10, about the stories a day that reach HN's front page). The snapshot's
own posts (a first start reads them all at once, as the real lists would on a fresh install) are
summarized and priced as measured.

Target: the default day's model spend stays under the default daily budget (HNPAL_LLM_DAILY_BUDGET_USD).

    .venv/bin/python bench/cost.py [--stories-per-day 1300] [--listed 450] [--paid-share 0.10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

from _common import REDIS_URL, bench_database, last_line, use_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories-per-day", type=int, default=1300)
    parser.add_argument("--listed", type=int, default=450)
    parser.add_argument("--paid-share", type=float, default=0.10)
    args = parser.parse_args()

    from hnpal.sandbox.hn_replay import HNReplayServer
    from hnpal.sandbox.llm_api import LLMServer

    tmp = Path(tempfile.mkdtemp(prefix="hnpal-cost-"))
    with bench_database() as url, HNReplayServer() as hn, LLMServer(model="gpt-4o-mini") as model:
        use_settings(
            database_url=url,
            redis_url=REDIS_URL,
            redis_key_prefix=f"hnpal-bench-cost-{uuid.uuid4().hex[:6]}:",
            hn_api_base_url=hn.api_url,
            crawl_allow_hosts="127.0.0.1",
            openai_api_key="sk-bench-cost",
            openai_base_url=model.base_url,
            content_path=str(tmp / "content.rocksdb"),
            data_dir=str(tmp / "var"),
        )
        from config.settings import get_settings

        settings = get_settings()
        figures = measure(hn, settings, tmp)

    per_fetch_lists = figures["list_requests"]
    fetches = 86400 / settings.fetch_interval
    refreshes = 86400 / settings.refresh_interval
    window_posts = args.stories_per_day * settings.refresh_window_hours / 24
    hn_day = (
        fetches * (per_fetch_lists + args.listed)
        + refreshes * window_posts
        + args.stories_per_day * figures["comment_share"] * figures["requests_per_thread"]
    )
    pages_day = args.stories_per_day * figures["url_share"] * figures["requests_per_page"]
    paid_posts = args.stories_per_day * args.paid_share
    # a post at the paid tier has a lively thread too: its comment summary is paid as well
    # and every new post is asked what it is about, whichever summarizer made its summary
    calls_day = (
        paid_posts * (figures["calls_per_summary"] + figures["calls_per_comment_summary"])
        + args.stories_per_day * figures["calls_per_label"]
    )
    usd_day = (
        paid_posts * (figures["usd_per_summary"] + figures["usd_per_comment_summary"])
        + args.stories_per_day * figures["usd_per_label"]
    )
    budget = float(settings.llm_daily_budget_usd)
    print(
        f"measured on the sandbox ({figures['posts']} snapshot posts, {settings.openai_model} prices): "
        f"{per_fetch_lists} list requests per fetch + 1 per listed item; 1 request per refreshed post; "
        f"{figures['requests_per_thread']:.1f} requests per comment thread; "
        f"{figures['requests_per_page']:.2f} requests per page; a paid summary "
        f"{figures['calls_per_summary']:.1f} calls, {figures['tokens_per_summary']:.0f} tokens, "
        f"${figures['usd_per_summary']:.5f}; what a post is about {figures['calls_per_label']:.1f} calls, "
        f"{figures['tokens_per_label']:.0f} tokens, ${figures['usd_per_label']:.5f}; a comment summary "
        f"{figures['tokens_per_comment_summary']:.0f} tokens, ${figures['usd_per_comment_summary']:.5f}"
    )
    print(
        f"first start (the snapshot's lists, all new at once): {figures['posts']} posts, {figures['pages']} pages, "
        f"{figures['paid_calls']} paid calls, ${figures['first_start_usd']:.4f}"
    )
    print(
        f"a default day at {args.stories_per_day} new stories, {args.listed} ids per list fetch, "
        f"{args.paid_share:.0%} of posts reaching {settings.llm_paid_min_score}+ points: "
        f"{hn_day:,.0f} HN requests, {pages_day:,.0f} page requests, {calls_day:,.0f} model calls, "
        f"${usd_day:.2f} (budget ${budget:.2f})"
    )
    print(
        last_line(
            hn_requests_per_day=int(hn_day),
            pages_per_day=int(pages_day),
            model_calls_per_day=int(calls_day),
            usd_per_day=round(usd_day, 3),
            usd_per_paid_summary=round(figures["usd_per_summary"], 6),
            budget_usd=budget,
            within_budget=usd_day <= budget,
        )
    )
    return 0 if usd_day <= budget else 1


def measure(hn, settings, tmp: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from hnpal import jobs
    from hnpal.content import ContentStore
    from hnpal.crawl.fetch import Fetcher
    from hnpal.crawl.service import extract_page
    from hnpal.db.session import session_scope
    from hnpal.ingest import service as ingest
    from hnpal.posts.models import Post
    from hnpal.relevance import labels
    from hnpal.summaries import service as summaries
    from hnpal.usage.models import AgentCall

    # Two lively threads (the snapshot's are quiet): 40 comments of a few sentences each.
    for n in range(2):
        kids = []
        for c in range(40):
            comment_id = hn.maxitem() + 1
            words = "I ran the same benchmark on my laptop; the numbers differ because the page cache was warm. "
            hn.add_item({"id": comment_id, "type": "comment", "by": f"user{c}", "time": 1718960400 + c,
                         "text": f"Comment {c} on thread {n}: " + words * 2})  # fmt: skip
            kids.append(comment_id)
        hn.add_story(title=f"A lively thread {n}", url=hn.url("/articles/raft-leader-leases.html"), score=300,
                     kids=kids)  # fmt: skip
    # One scheduled list fetch.
    hn.request_log.clear()
    with jobs.recording(), session_scope() as session:
        ingest.fetch_lists(session=session, lists=settings.hn_lists, limit=settings.hn_list_limit)
    paths = [path for _m, path, _s in hn.request_log]
    list_requests = sum(1 for p in paths if p.split("/")[-1].removesuffix(".json").endswith("stories"))
    with session_scope() as session:
        posts = list(session.scalars(select(Post).order_by(Post.id)))
        session.expunge_all()
    # Comment threads of the posts that have comments.
    threads, thread_requests = 0, 0
    store = ContentStore.open_writer(tmp / "content.rocksdb")
    for post in posts:
        if post.comment_count <= 0:
            continue
        hn.request_log.clear()
        found = ingest.fetch_comments(post_id=post.id, depth=settings.comments_depth, limit=settings.comments_max)
        thread_requests += len(hn.request_log)
        threads += 1
        if found is not None:
            store.put(found[0], comments=found[1])
            with session_scope() as session:
                session.execute(
                    Post.__table__.update().where(Post.id == post.id).values(comments_fetched_at=func.now())
                )
    # Pages.
    fetcher = Fetcher(settings)
    pages = page_requests = 0
    for post in posts:
        if not post.url:
            continue
        hn.request_log.clear()
        pages += 1
        try:
            extraction = extract_page(fetcher.fetch(post.url))
        except Exception:  # noqa: BLE001 - a page that fails is still a request
            extraction = None
        page_requests += len(hn.request_log)
        if extraction is not None:
            store.put(post.hn_id, text=extraction.text, markdown=extraction.markdown)
            with session_scope() as session:
                session.execute(
                    Post.__table__.update()
                    .where(Post.id == post.id)
                    .values(has_text=True, has_markdown=True, is_crawl_success=True, crawl_status="success")
                )
    # Every post summarized with the paid model (its score lifted to the tier), comment summaries too.
    with session_scope() as session:
        session.execute(Post.__table__.update().values(score=func.greatest(Post.score, settings.llm_paid_min_score)))
    summarized = commented = 0
    for post in posts:
        outcome = summaries.summarize(post_id=post.id, style=settings.summary_default_style, store=store)
        summarized += outcome.status == "generated"
        if post.comment_count >= settings.comments_summary_min:
            commented += summaries.summarize(post_id=post.id, style="comments", store=store).status == "generated"
    store.close()

    def usage(purpose: str) -> tuple[int, int, Decimal]:
        with session_scope() as session:
            calls, tokens, usd = session.execute(
                select(func.count(), func.coalesce(func.sum(AgentCall.input_tokens + AgentCall.output_tokens), 0),
                       func.coalesce(func.sum(AgentCall.cost_usd), 0))
                .where(AgentCall.success, AgentCall.purpose.like(f"{purpose}%"))
            ).one()  # fmt: skip
        return int(calls), int(tokens), Decimal(usd)

    s_calls, s_tokens, s_usd = usage(settings.summary_default_style)
    c_calls, c_tokens, c_usd = usage("comments")
    t_calls, t_tokens, t_usd = usage(labels.PURPOSE)
    with_url = sum(1 for p in posts if p.url)
    return {
        "posts": len(posts),
        "pages": pages,
        "list_requests": list_requests,
        "requests_per_thread": thread_requests / max(1, threads),
        "requests_per_page": page_requests / max(1, pages),
        "url_share": with_url / max(1, len(posts)),
        "comment_share": threads / max(1, len(posts)),
        "calls_per_summary": s_calls / max(1, summarized),
        "calls_per_comment_summary": c_calls / max(1, commented),
        "tokens_per_summary": s_tokens / max(1, summarized),
        "tokens_per_comment_summary": c_tokens / max(1, commented),
        "usd_per_summary": float(s_usd) / max(1, summarized),
        "usd_per_comment_summary": float(c_usd) / max(1, commented),
        "calls_per_label": t_calls / max(1, summarized),
        "tokens_per_label": t_tokens / max(1, t_calls),
        "usd_per_label": float(t_usd) / max(1, summarized),
        "paid_calls": s_calls + c_calls + t_calls,
        "first_start_usd": float(s_usd + c_usd + t_usd),
    }


if __name__ == "__main__":
    sys.exit(main())
