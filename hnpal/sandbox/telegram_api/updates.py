"""Delivering updates to the bot: getUpdates (offsets, long polling, ``allowed_updates``) and webhooks
(POSTed from a background thread with the secret token header and a few retries)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from hnpal.sandbox.telegram_api.constants import SECRET
from hnpal.sandbox.telegram_api.methods import BotMethods
from hnpal.sandbox.telegram_api.params import param_bool, param_int, param_json, param_str
from hnpal.sandbox.telegram_api.records import Described, TelegramError, Upload, WebhookDelivery, bad_request


class Updates(BotMethods):
    """getUpdates, setWebhook, deleteWebhook, getWebhookInfo and the webhook delivery thread."""

    def _get_updates(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        offset = param_int(params, "offset")
        limit = param_int(params, "limit")
        limit = 100 if limit is None else min(max(limit, 1), 100)
        timeout = param_int(params, "timeout") or 0
        allowed = param_json(params, "allowed_updates", "can't parse allowed_updates JSON object")
        deadline = time.monotonic() + max(timeout, 0)
        with self._cond:
            if self._webhook is not None:
                raise TelegramError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                    "the webhook first",
                )
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed]
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # an older long poll ends with a conflict
            self._confirm(offset)
            while True:
                batch = [u for u in self._updates if offset is None or offset <= 0 or u["update_id"] >= offset]
                if batch:
                    return json.loads(json.dumps(batch[:limit]))
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return []
                self._cond.wait(min(left, 0.5))
                if self._poll_generation != generation:
                    raise TelegramError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                        "is running",
                    )
                if self._webhook is not None:
                    raise TelegramError(409, "Conflict: terminated by setWebhook request")

    def _confirm(self, offset: int | None) -> None:
        """Drop the updates an ``offset`` confirms (all below it; a negative one keeps the last -offset)."""
        if offset is None or offset == 0:
            return
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        else:
            self._updates = self._updates[offset:] if -offset < len(self._updates) else self._updates

    def _set_webhook(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        url = (param_str(params, "url") or "").strip()
        if not url:
            self._delete_webhook(params, files)
            return Described(True, "Webhook was deleted")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = param_str(params, "secret_token")
        if secret is not None and not SECRET.match(secret):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        allowed = param_json(params, "allowed_updates", "can't parse allowed_updates JSON object")
        max_connections = param_int(params, "max_connections") or 40
        with self._cond:
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed]
            if param_bool(params, "drop_pending_updates"):
                self._updates.clear()
            same = self._webhook is not None and self._webhook["url"] == url
            self._webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
            self._webhook_error = None
            self._webhook_generation += 1
            generation = self._webhook_generation
            self._cond.notify_all()
        threading.Thread(
            target=self._deliver_webhooks, args=(generation,), daemon=True, name=f"telegram-webhook-{self.port}"
        ).start()
        return Described(True, "Webhook is already set" if same else "Webhook was set")

    def _delete_webhook(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        with self._cond:
            had = self._webhook is not None
            self._webhook = None
            self._webhook_generation += 1
            if param_bool(params, "drop_pending_updates"):
                self._updates.clear()
            self._cond.notify_all()
        return Described(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _get_webhook_info(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        with self._lock:
            info: dict[str, Any] = {
                "url": self._webhook["url"] if self._webhook else "",
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if self._webhook:
                info["max_connections"] = self._webhook["max_connections"]
                if self._allowed_updates:
                    info["allowed_updates"] = list(self._allowed_updates)
            if self._webhook_error:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
            return info

    def _deliver_webhooks(self, generation: int) -> None:
        """Background thread: POST queued updates, oldest first, to the webhook of ``generation``."""
        while True:
            with self._cond:
                while self._webhook_generation == generation and not self._updates:
                    self._cond.wait(0.5)
                if self._webhook_generation != generation or self._webhook is None:
                    return
                update = self._updates[0]
                url = self._webhook["url"]
                secret = self._webhook["secret_token"]
            delivery = self._post_update(url, secret, update)
            with self._cond:
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                self.webhook_deliveries.append(delivery)
                if not delivery.delivered:
                    self._webhook_error = (int(time.time()), delivery.error or "delivery failed")
                self._cond.notify_all()

    def _post_update(self, url: str, secret: str | None, update: dict[str, Any]) -> WebhookDelivery:
        body = json.dumps(update, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        status: int | None = None
        error: str | None = None
        attempts = 0
        for attempt in range(max(1, self.webhook_attempts)):
            if attempt and self._stopping.wait(self.webhook_retry_delay):
                break
            attempts += 1
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.webhook_timeout) as response:
                    status = response.status
                    answer = response.read()
                self._run_webhook_answer(answer)
                return WebhookDelivery(update["update_id"], attempts, status, True, None, time.monotonic())
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"Wrong response from the webhook: {exc.code} {exc.reason}"
                exc.close()
            except (OSError, ValueError) as exc:
                status, error = None, f"Connection failed: {exc}"
        return WebhookDelivery(update["update_id"], attempts, status, False, error, time.monotonic())

    def _run_webhook_answer(self, answer: bytes) -> None:
        """A webhook may answer with a method call (``{"method": "sendMessage", ...}``); run it."""
        try:
            data = json.loads(answer.decode("utf-8")) if answer.strip() else None
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            params = {k: v for k, v in data.items() if k != "method"}
            try:
                self.call(data["method"], params)
                self._log(data["method"], 200)
            except TelegramError as error:
                self._log(data["method"], error.status)
