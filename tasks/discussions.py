"""Discussion tasks: answers on the ``llm`` queue (a thread pool overlaps the model's latency); the idle
sweep on ``default``. The work is in :mod:`hnpal.telegram.answers`."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.errors import Retry, WorkFailed
from hnpal.telegram import answers


# Idempotent: an answered message is not answered again (see hnpal.conversations.service.reply).
@app.task(name="hnpal.discussions.reply", queue=queues.LLM, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None, throws=(WorkFailed,))  # fmt: skip
def reply(self, conversation_id: int, message_index: int) -> str:
    """Answer one user message of a conversation. Returns what happened."""
    try:
        return answers.reply(conversation_id, message_index, retries=self.request.retries)
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from None


# Idempotent: a redelivered message finds its update processed and answers only an answer lost with its worker.
@app.task(name="hnpal.discussions.message", queue=queues.LLM, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None, throws=(WorkFailed,))  # fmt: skip
def message(self, update_id: int) -> str:
    """A stored update in a discussion, handled and answered in this one task. Returns its status."""
    try:
        return answers.message(update_id, retries=self.request.retries)
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from None


@app.task(name="hnpal.discussions.idle", queue=queues.LLM, bind=True, max_retries=3)
def idle(self, user_id: int, text: str) -> str:
    """A short general answer to free text outside a discussion (not idempotent: no late ack)."""
    try:
        return answers.idle(user_id, text, retries=self.request.retries)
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from None


@app.task(name="hnpal.discussions.sweep", queue=queues.DEFAULT)
def sweep() -> list[int]:
    """Close discussions silent for HNPAL_DISCUSSION_IDLE_MINUTES; tell the users; start the extraction."""
    return answers.close_idle()
