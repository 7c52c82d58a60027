"""Message rendering: what a delivered post looks like, within Telegram's limits."""

from __future__ import annotations

from hnpal.telegram.render import MAX_MESSAGE, PostCard, plain_summary, post_message, visible_length


def card(summary: str, title: str = "A title") -> PostCard:
    return PostCard(delivery_id=1, hn_id=42, title=title, url="https://example.com/a?b=1&c=2",
                    domain="example.com", score=120, comments=33, summary=summary, position=2, total=5)  # fmt: skip


def test_markdown_marks_of_an_extractive_summary_do_not_show() -> None:
    text = "* **Half-applied state.** The `apply` step [fails](https://x.example/y).\n## Then\n- one item"
    assert plain_summary(text) == "Half-applied state. The apply step fails.\nThen\none item"
    assert plain_summary("2 * 3 = 6, snake_case and __init__ stay") == "2 * 3 = 6, snake_case and __init__ stay"


def test_a_post_message_is_escaped_and_within_the_limit() -> None:
    message = post_message(card("**Bold** claim & <script> " * 400, title='<b>"Quotes" & more</b>'))
    assert "<script>" not in message and "&lt;script&gt;" in message
    assert "&lt;b&gt;&quot;Quotes&quot; &amp; more&lt;/b&gt;" in message
    assert "**" not in message
    assert visible_length(message) <= MAX_MESSAGE
    assert message.endswith("⬆️ 120 · 💬 33 · 2/5")
