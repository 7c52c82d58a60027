"""Faults injection: make any Bot API method answer 5xx, 429, 400, slowly, or drop the connection."""

from __future__ import annotations

from typing import Any

from hnpal.sandbox.telegram_api.constants import FAULT_KINDS
from hnpal.sandbox.telegram_api.records import Fault, Reply, TelegramError, bad_request, error_reply, too_many
from hnpal.sandbox.telegram_api.state import ChatState


class Faults(ChatState):
    """Scripted misbehaviour of the API methods (:meth:`set_fault`)."""

    def set_fault(self, method: str, kind: str, count: int | None = 1, *, skip: int = 0, **params: Any) -> None:
        """Calls of ``method`` (any case; ``"*"`` for every method) misbehave as ``kind``: for the next
        ``count`` calls (after letting ``skip`` of them through), or until :meth:`clear_faults` when
        ``count`` is None. The most recently set matching fault wins.

        Kinds and their params (defaults):

        * ``error_500(description="Internal Server Error")``: 500 in the Bot API error shape;
        * ``bad_gateway``: 502 with nginx's HTML page, as Telegram's front end sometimes answers;
        * ``bad_request(description="message can't be edited")``: 400 (an edit of a message older than
          48 hours, or otherwise no longer editable, is refused so);
        * ``too_many_requests(retry_after=1)``: 429 with ``parameters.retry_after`` (not counted in
          :attr:`too_many_requests`, which counts enforced limits only);
        * ``timeout(seconds=30)``: wait, then answer normally (the client's timeout fires first);
        * ``drop(mode="close"|"reset")``: the connection ends without an answer.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        with self._lock:
            self._faults.append(Fault(method.lower(), kind, dict(params), count, skip))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str) -> Fault | None:
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            for fault in reversed(self._faults):
                if fault.method in ("*", method.lower()):
                    if fault.skip:
                        fault.skip -= 1
                        return None
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _fault_reply(self, fault: Fault) -> Reply | None:
        kind, params = fault.kind, fault.params
        if kind == "error_500":
            return error_reply(TelegramError(500, str(params.get("description", "Internal Server Error"))))
        if kind == "bad_gateway":
            page = (
                b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
                b"</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
            )
            return Reply(502, page, "text/html")
        if kind == "bad_request":
            return error_reply(bad_request(str(params.get("description", "message can't be edited"))))
        if kind == "too_many_requests":
            return error_reply(too_many(max(1, int(params.get("retry_after", 1)))))
        if kind == "timeout":
            if self._stopping.wait(float(params.get("seconds", 30))):
                return Reply(drop="close")
            return None
        if kind == "drop":
            return Reply(drop=str(params.get("mode", "close")))
        raise ValueError(f"unknown fault kind {kind!r}")
