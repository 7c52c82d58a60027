"""The conversation window, the prompt builder, message splitting and the offline discussion answers,
without the bot."""

from __future__ import annotations

from hnpal.conversations import offline, window
from hnpal.llm.base import LLMRequest
from hnpal.llm.offline import OfflineProvider
from hnpal.telegram.render import utf16_len

CAP = 100_000


def turns(n: int, text: str = "a short message about databases.") -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: {text}"} for i in range(n)]


def test_window_keeps_the_last_messages_verbatim() -> None:
    messages = turns(31)
    budget = window.history_budget(cap=CAP, persona=window.PERSONA, new_message="q", context_bytes=10_000)
    upto = window.plan_window(messages, summarized_count=0, new_index=30, window=10, budget=budget)
    assert upto == 20  # messages 20..29 verbatim, 0..19 folded
    # what was folded before stays folded
    assert window.plan_window(messages, summarized_count=25, new_index=30, window=10, budget=budget) == 25
    # a short talk folds nothing
    assert window.plan_window(turns(5), summarized_count=0, new_index=4, window=10, budget=budget) == 0


def test_huge_messages_are_folded_so_the_prompt_stays_under_the_cap() -> None:
    big = "€" * 10_000  # 30,000 bytes each: ten of them alone are three times the cap
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": big} for i in range(21)]
    context = "article sentence. " * 5_000  # 90 KB of context
    budget = window.history_budget(cap=CAP, persona=window.PERSONA, new_message=big, context_bytes=len(context))
    upto = window.plan_window(messages, summarized_count=0, new_index=20, window=10, budget=budget)
    assert 10 < upto < 20
    prompt = window.build_prompt(
        persona=window.PERSONA,
        context=context,
        summary="s" * 20_000,
        history=messages[upto:20],
        new_message=big,
        cap=CAP,
    )
    assert prompt.bytes <= CAP
    assert prompt.context_truncated and prompt.summary_truncated
    assert prompt.messages[-1] == {"role": "user", "content": big}  # the question goes whole
    assert prompt.messages[0]["role"] == "system" and prompt.messages[0]["content"].startswith(window.PERSONA)
    assert "article sentence" not in prompt.messages[0]["content"]
    assert "article sentence" in prompt.messages[1]["content"]  # the data blocks' message, cut
    assert [m["role"] for m in prompt.messages[2:-1]] == [m["role"] for m in messages[upto:20]]


def test_small_prompt_is_whole() -> None:
    prompt = window.build_prompt(
        persona="P", context="C" * 100, summary="talked before", history=turns(2), new_message="why?", cap=CAP
    )
    system, data = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert system.startswith("P\n\n") and "C" * 100 not in system and "talked before" not in system
    assert "C" * 100 in data and "talked before" in data
    assert not prompt.context_truncated and not prompt.summary_truncated
    assert [m["content"] for m in prompt.messages[2:]] == [m["content"] for m in turns(2)] + ["why?"]


def test_cut_bytes_never_splits_a_character() -> None:
    text, cut = window.cut_bytes("日本語" * 100, 50)
    assert cut and len(text.encode()) <= 50 and text.endswith("…")
    assert window.cut_bytes("short", 50) == ("short", False)


def test_split_message_respects_telegram_units() -> None:
    text = ("A sentence with an emoji 🙂 in it. " * 400).strip()
    parts = window.split_message(text)
    assert len(parts) > 1
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert " ".join(parts).split() == text.split()  # nothing lost, cut at spaces
    assert window.split_message("x" * 9000) == ["x" * 4096, "x" * 4096, "x" * 808]


ARTICLE = (
    "PostgreSQL 17 ships a new incremental backup feature for large databases.\n"
    "The release also improves vacuum memory usage considerably.\n"
    "Logical replication now supports failover of slots to standbys."
)


def test_offline_answer_quotes_the_relevant_sentences() -> None:
    hints = {
        "question": "How does the incremental backup work?",
        "title": "PostgreSQL 17 released",
        "article": ARTICLE,
        "comments": [{"id": 42, "text": "Incremental backup finally makes nightly backups cheap for us."}],
    }
    text = offline.answer(hints)
    assert text.startswith(offline.INTRO)
    assert "incremental backup feature" in text and "(comment #42)" in text
    assert "vacuum" not in text

    nothing = offline.answer({**hints, "question": "What about the weather on Mars?"})
    assert "don't seem to address that" in nothing and "PostgreSQL 17 ships" in nothing
    no_material = offline.answer({"question": "why?", "title": "T", "article": "", "comments": []})
    assert "neither the article nor its comments" in no_material


def test_offline_fold_condenses_turns() -> None:
    folded = offline.fold(
        {
            "summary": "Earlier: the user asked about backups.",
            "messages": [
                {"role": "user", "content": "Does it work with pgBackRest? I use it at work."},
                {"role": "assistant", "content": "Yes. " + "More detail. " * 100},
            ],
        }
    )
    lines = folded.splitlines()
    assert lines[0] == "Earlier: the user asked about backups."
    assert lines[1] == "User: Does it work with pgBackRest?"
    assert lines[2].startswith("HN Pal: Yes.")
    assert (
        len(offline.fold({"messages": [{"role": "user", "content": "word " * 5000}] * 200})) <= offline.FOLD_MAX_CHARS
    )


def test_offline_provider_dispatches_discussion_and_fold() -> None:
    provider = OfflineProvider()
    request = LLMRequest(
        messages=[{"role": "system", "content": "persona"}, {"role": "user", "content": "incremental backup?"}],
        hints={"task": "discussion", "question": "incremental backup?", "title": "PG", "article": ARTICLE},
    )
    result = provider.complete(request)
    assert "incremental backup feature" in result.text
    assert result.input_tokens > 0 and result.output_tokens > 0 and result.provider == "offline"
    fold = provider.complete(
        LLMRequest(messages=[{"role": "user", "content": "x"}], hints={"task": "fold", "messages": turns(2)})
    )
    assert fold.text.startswith("User: 0: a short message about databases.")
