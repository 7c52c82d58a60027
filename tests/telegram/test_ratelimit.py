"""The Redis-backed send limiter: real Redis (the test's key prefix), real threads, and end to end against
the sandbox Telegram server with its flood control on. Assertions are on counts within windows; time is
only bounded from below, generously (the machine is noisy)."""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis as redis_lib

from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.telegram.client import BotAPI, RetryAfter, close_clients
from hnpal.telegram.ratelimit import LimiterTimeout, SendLimiter, clear_cache, rate_item


@pytest.fixture
def redis_url() -> str:
    return os.environ["HNPAL_REDIS_URL"]


@pytest.fixture
def make_limiter(redis_url: str, key_prefix: str) -> Callable[..., SendLimiter]:
    def make(overall_rate: float = 20, chat_rate: float = 1, **kwargs: object) -> SendLimiter:
        return SendLimiter(
            overall_rate=overall_rate, chat_rate=chat_rate, redis_url=redis_url, prefix=key_prefix, **kwargs
        )

    return make


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open sliding ``window``."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def paced_acquisitions(limiter: SendLimiter, threads: int, seconds: float) -> tuple[list[float], float]:
    """``threads`` threads acquire for distinct chats for ``seconds``; the acquisition times and start."""
    chats = itertools.count(1)
    lock = threading.Lock()
    stamps: list[float] = []
    start = time.monotonic()
    deadline = start + seconds

    def work(_: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                chat_id = next(chats)
            try:
                limiter.acquire(chat_id, max_wait=max(deadline - time.monotonic(), 0.0))
            except LimiterTimeout:
                return
            with lock:
                stamps.append(time.monotonic())

    run_threads(threads, work)
    return stamps, start


def test_rate_items() -> None:
    assert (rate_item(30, 0.97).amount, rate_item(30, 0.97).get_expiry()) == (29, 1)
    assert rate_item(1000, 0.97).amount == 970
    assert (rate_item(1.0).amount, rate_item(1.0).get_expiry()) == (1, 1)
    assert (rate_item(0.5).amount, rate_item(0.5).get_expiry()) == (1, 2)
    assert (rate_item(0.3).amount, rate_item(0.3).get_expiry()) == (1, 4)  # rounded to the safe side
    with pytest.raises(ValueError):
        rate_item(0)


def test_overall_limit_holds_across_threads(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter(overall_rate=20, chat_rate=1)
    assert limiter.overall.amount == 19
    stamps, start = paced_acquisitions(limiter, threads=12, seconds=2.0)
    assert max_in_window(stamps) <= 20
    in_run = [t for t in stamps if t < start + 2.0]
    assert len(in_run) / 2.0 >= 0.9 * (20 * 0.97)


def test_paid_broadcast_rate_is_reachable(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter(overall_rate=1000, chat_rate=1)
    assert limiter.overall.amount == 970
    stamps, start = paced_acquisitions(limiter, threads=16, seconds=1.5)
    assert max_in_window(stamps) <= 1000
    assert len([t for t in stamps if t < start + 1.5]) >= 0.9 * 970


def test_same_chat_sends_are_a_second_apart(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter(overall_rate=30, chat_rate=1)
    assert limiter.acquire(7) < 0.5
    assert limiter.try_acquire(7) > 0.9  # the chat's window is full: wait about 1.05 s
    assert limiter.try_acquire(8) == 0.0  # another chat goes at once
    assert limiter.acquire(7) >= 0.9

    stamps: list[float] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        for _ in range(2):
            limiter.acquire(99)
            with lock:
                stamps.append(time.monotonic())

    run_threads(3, work)
    stamps.sort()
    assert len(stamps) == 6
    assert min(b - a for a, b in itertools.pairwise(stamps)) >= 0.95


def test_fractional_chat_rate(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter(overall_rate=30, chat_rate=0.5)
    limiter.acquire(5)
    assert limiter.try_acquire(5) > 1.9


def test_a_full_window_takes_nothing_from_the_other(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter(overall_rate=3, chat_rate=1, safety=1.0)
    for chat_id in (1, 2, 3):
        assert limiter.try_acquire(chat_id) == 0.0
    assert limiter.try_acquire(4) > 0.5  # overall window full
    assert limiter.window_stats(chat_id=4).remaining == 1  # chat 4's token was not taken
    assert limiter.window_stats().remaining == 0
    assert limiter.acquire(4) > 0.5
    # and the other way round: chat 4's window is full, so the overall token stays
    remaining = limiter.window_stats().remaining
    assert limiter.try_acquire(4) > 0.5
    assert limiter.window_stats().remaining == remaining


def test_penalize_blocks_everyone(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter()
    limiter.penalize(0.8)
    assert 0.5 < limiter.try_acquire(1) <= 0.8
    assert 0.5 < limiter.try_acquire(2) <= 0.8
    assert limiter.window_stats().remaining == limiter.overall.amount  # nothing was taken
    assert limiter.acquire(3) >= 0.5
    assert limiter.try_acquire(4) == 0.0  # the block is over


def test_penalize_one_chat(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter()
    limiter.penalize(3, chat_id=5)
    assert limiter.try_acquire(5) > 2.0
    assert limiter.try_acquire(6) == 0.0
    limiter.penalize(0.1, chat_id=5)  # a shorter block does not shorten the longer one
    assert limiter.blocked_for(5) > 2.0
    assert limiter.blocked_for() == 0.0
    limiter.penalize(0)  # no-op
    assert limiter.blocked_for() == 0.0


def test_acquire_gives_up_past_max_wait(make_limiter: Callable[..., SendLimiter]) -> None:
    limiter = make_limiter()
    limiter.penalize(5)
    started = time.monotonic()
    with pytest.raises(LimiterTimeout) as caught:
        limiter.acquire(1, max_wait=0.5)
    assert time.monotonic() - started < 0.5  # it did not sleep towards a wait it could not finish
    assert caught.value.retry_in > 4 and caught.value.chat_id == 1
    assert caught.value.retry_after == caught.value.retry_in


def test_keys_live_under_the_prefix(
    make_limiter: Callable[..., SendLimiter], redis_client: redis_lib.Redis, key_prefix: str
) -> None:
    limiter = make_limiter()
    limiter.acquire(11)
    limiter.penalize(1, chat_id=11)
    keys = set(redis_client.scan_iter(match=f"{key_prefix}*"))
    assert {f"{key_prefix}ratelimit:send/overall", f"{key_prefix}ratelimit:send/chat/11"} <= keys
    assert f"{key_prefix}ratelimit:send/blocked/chat/11" in keys
    assert 0 < redis_client.pttl(f"{key_prefix}ratelimit:send/overall") <= 3000  # windows expire


def test_from_settings(settings_env: Callable[..., None], key_prefix: str) -> None:
    clear_cache()
    settings_env(redis_key_prefix=key_prefix, telegram_global_rate=20, telegram_chat_rate=1)
    limiter = SendLimiter.from_settings()
    assert limiter is SendLimiter.from_settings()
    assert (limiter.overall.amount, limiter.chat.amount, limiter.prefix) == (19, 1, key_prefix)
    settings_env(telegram_paid_broadcast="true")
    assert SendLimiter.from_settings().overall.amount == 970
    clear_cache()


@pytest.fixture
def limited_tg() -> Iterator[TelegramServer]:
    with TelegramServer(global_rate=20, per_chat_rate=1, enforce_limits=True) as server:
        yield server
    close_clients()


def test_end_to_end_no_429(make_limiter: Callable[..., SendLimiter], limited_tg: TelegramServer) -> None:
    tg = limited_tg
    chats = list(range(1001, 1016))  # 15 chats, 4 messages each
    for chat_id in chats:
        tg.add_user(chat_id)
    api = BotAPI(token=tg.token, base_url=tg.base_url, timeout=10)
    limiter = make_limiter(overall_rate=20, chat_rate=1)
    work: queue.Queue[tuple[int, int]] = queue.Queue()
    for number in range(60):
        work.put((chats[number % len(chats)], number))
    throttled: list[RetryAfter] = []

    def sender(_: int) -> None:
        while True:
            try:
                chat_id, number = work.get_nowait()
            except queue.Empty:
                return
            while True:
                limiter.acquire(chat_id, max_wait=60)
                try:
                    api.send_message(chat_id, f"message <b>{number}</b>")
                    break
                except RetryAfter as exc:  # would be a limiter failure; recover like a real sender
                    throttled.append(exc)
                    limiter.penalize(exc.retry_after, chat_id)

    run_threads(8, sender)
    assert throttled == [] and tg.too_many_requests == 0
    assert len(tg.all_messages()) == 60
    assert sorted(m.text for m in tg.all_messages()) == sorted(f"message {n}" for n in range(60))
    assert tg.max_sends_in_window(1.0) <= 20
    assert all(tg.max_sends_in_window(1.0, chat_id=chat_id) <= 1 for chat_id in chats)
