"""HN Pal settings.

Every setting is read from the environment with the prefix ``HNPAL_``, then from a ``.env`` file (see
:func:`env_file` for where it is looked for: ``HNPAL_ENV_FILE``, ``$HNPAL_HOME/.env``, ``./.env``, the
project folder's ``.env``). ``.env.example`` and docs/settings.md list them all. A bad value stops
start-up with one line that names the setting (see :func:`load_settings`).
"""

from __future__ import annotations

import functools
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyUrl,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=Decimal("0.15"), output=Decimal("0.60")),
    "gpt-4o": ModelPrice(input=Decimal("2.50"), output=Decimal("10.00")),
    "gpt-4.1-mini": ModelPrice(input=Decimal("0.40"), output=Decimal("1.60")),
    "offline-extractive": ModelPrice(input=Decimal("0"), output=Decimal("0")),
}


def bot_api_base(url: str) -> str:
    """The Bot API base as every client uses it, ``https://api.telegram.org/bot``: no trailing slash (a
    ``/bot/`` would give ``/bot/<token>/getMe``), whatever the setting said."""
    return url.strip().rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HNPAL_",
        env_file=None,  # load_settings passes the file env_file() finds
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # An empty value (HNPAL_X=) means "use the default", as in .env.example.
        env_ignore_empty=True,
    )

    # --- storage -------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql+psycopg2://user:pass@host:5432/db). "
        "Empty: start the embedded PostgreSQL under data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://host:6379/0 or unix:///path.sock). "
        "Empty: start the embedded Redis under data_dir.",
    )
    data_dir: Path = Field(default=Path("var"), description="Where the embedded servers and the content store live.")
    content_path: Path | None = Field(
        default=None, description="RocksDB content store directory. Default: <data_dir>/content.rocksdb."
    )
    content_block_cache_mb: int = Field(default=256, ge=8, le=65536, description="RocksDB block cache.")
    redis_key_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description="Namespace for every key HN Pal writes to Redis (broker and state).",
    )
    db_pool_size: int = Field(default=5, ge=1, le=100, description="SQLAlchemy pool size per process.")

    # --- internet services (base URLs so the sandboxes can stand in) ------------------------------
    hn_api_base_url: AnyUrl = Field(
        default=AnyUrl("https://hacker-news.firebaseio.com/v0/"), description="HN Firebase API."
    )
    telegram_token: SecretStr | None = Field(default=None, description="Bot token from @BotFather.")
    telegram_base_url: AnyUrl = Field(
        default=AnyUrl("https://api.telegram.org/bot"), description="Telegram Bot API base URL."
    )
    telegram_mode: Literal["polling", "webhook"] = Field(
        default="polling", description="How the bot receives updates: long polling, or a webhook."
    )
    telegram_webhook_url: AnyUrl | None = Field(
        default=None, description="Public HTTPS URL Telegram posts updates to (webhook mode)."
    )
    telegram_webhook_listen: str = Field(default="127.0.0.1", description="Address the webhook server binds.")
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535, description="Port the webhook server binds.")
    telegram_webhook_secret: SecretStr | None = Field(
        default=None, description="Secret Telegram sends with each webhook call (A-Z, a-z, 0-9, _ and -)."
    )
    telegram_poll_timeout: int = Field(default=30, ge=0, le=50, description="Long-poll seconds per getUpdates.")
    telegram_global_rate: float = Field(
        default=30.0, gt=0, le=1000, description="Messages per second across all senders (Telegram: about 30)."
    )
    telegram_paid_broadcast: bool = Field(
        default=False, description="Paid broadcasts: lifts the overall limit to 1000 messages per second."
    )
    telegram_chat_rate: float = Field(default=1.0, gt=0, le=30, description="Messages per second to one chat.")
    telegram_timeout: float = Field(default=15.0, gt=0, le=120, description="Seconds per Bot API request.")
    telegram_user_update_rate: float = Field(
        default=0.5, gt=0, le=100, description="Updates per second one user may have handled; the rest waits."
    )
    telegram_user_update_burst: int = Field(
        default=5, ge=1, le=1000, description="Updates one user may send back to back before waiting."
    )
    telegram_group_update_rate: float = Field(
        default=0.5, gt=0, le=100, description="Updates per second handled from one group chat (all members)."
    )
    telegram_group_update_burst: int = Field(
        default=10, ge=1, le=1000, description="Updates one group chat may send back to back before waiting."
    )
    telegram_callback_secret: SecretStr | None = Field(
        default=None, description="Key that signs button data. Empty: derived from the bot token."
    )
    digest_lookback_hours: int = Field(
        default=24, ge=1, le=24 * 14, description="A first digest covers posts summarized this long ago."
    )
    digest_due_interval: float = Field(default=60.0, ge=5, description="Seconds between scans for due digests.")
    openai_api_key: SecretStr | None = Field(
        default=None, description="OpenAI (or compatible) API key. Empty: the offline summarizer is used."
    )
    openai_base_url: AnyUrl = Field(
        default=AnyUrl("https://api.openai.com/v1"), description="OpenAI-compatible API base URL."
    )
    openai_model: str = Field(default="gpt-4o-mini", min_length=1, description="Chat model.")
    openai_timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds per LLM request.")
    openai_temperature: float = Field(default=0.2, ge=0, le=2, description="Sampling temperature.")
    openai_max_tokens: int = Field(default=400, ge=16, le=16000, description="Longest answer, in tokens.")
    llm_attempts: int = Field(default=4, ge=1, le=10, description="Tries per LLM call on transient errors.")
    llm_retry_backoff: float = Field(
        default=2.0, gt=0, le=600, description="Seconds before the first LLM retry (doubles; Retry-After wins)."
    )
    llm_paid_min_score: int = Field(
        default=50, ge=0, description="Posts below this HN score get the offline summary, not the paid model."
    )
    llm_daily_budget_usd: Decimal = Field(
        default=Decimal("5"), ge=0, description="Daily LLM spend cap (USD); past it the offline provider takes over."
    )
    llm_topics: bool = Field(
        default=True,
        description="With a key: the model also says once what each summarized post is about (about 700 tokens).",
    )
    llm_key_recheck_seconds: float = Field(
        default=300.0,
        ge=5,
        le=86400,
        description="While the model refuses the key, the summary sweep re-checks it this often (seconds).",
    )
    summary_input_tokens: int = Field(
        default=3000, ge=200, le=100000, description="Article tokens sent per summary (longer: map-reduce)."
    )
    summary_default_style: Literal["basic", "technical", "business", "concise"] = Field(
        default="basic", description="The style stored in posts.summary."
    )
    comments_summary_min: int = Field(
        default=10, ge=1, description="Posts with at least this many comments get a comment summary."
    )
    llm_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="JSON: {model: {input, output}} in USD per 1M tokens.",
    )

    # --- crawling ------------------------------------------------------------------------------
    crawl_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts the SSRF guard lets through (e.g. 127.0.0.1 for the sandbox).",
    )
    user_agent: str = Field(
        default="HNPalBot/0.1 (+https://github.com/hnpal/hnpal)", min_length=3, description="HTTP User-Agent."
    )
    crawl_connect_timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds to connect.")
    crawl_read_timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds between bytes.")
    crawl_total_timeout: float = Field(
        default=45.0, gt=0, le=600, description="Seconds for a whole page (defeats slow trickles)."
    )
    crawl_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=64 * 1024, le=100 * 1024 * 1024, description="Page size cut-off."
    )
    crawl_max_redirects: int = Field(default=5, ge=0, le=20, description="Redirects followed per page.")
    crawl_retry_backoff: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds before the first crawl retry; doubles each time."
    )
    crawl_dispatch_batch: int = Field(default=200, ge=1, le=10000, description="Posts enqueued per dispatch.")
    repost_window_days: int = Field(default=30, ge=0, le=3650, description="Reuse a crawl of the same URL.")

    # --- HN ingestion --------------------------------------------------------------------------
    hn_concurrency: int = Field(default=32, ge=1, le=256, description="Concurrent HN API requests.")
    hn_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per HN API request.")
    hn_lists: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["top", "new", "best", "ask", "show", "job"],
        description="Comma-separated HN lists the scheduled fetch reads.",
    )
    hn_list_limit: int = Field(default=100, ge=1, le=500, description="Ids taken from each list per fetch.")
    fetch_interval: float = Field(default=600.0, ge=5, description="Seconds between scheduled list fetches.")
    refresh_interval: float = Field(default=1800.0, ge=5, description="Seconds between score refreshes.")
    refresh_window_hours: int = Field(default=48, ge=1, le=720, description="Posts younger than this refresh.")
    crawl_dispatch_interval: float = Field(default=120.0, ge=1, description="Seconds between crawl dispatches.")
    content_sweep_interval: float = Field(default=900.0, ge=5, description="Seconds between content sweeps.")
    comments_depth: int = Field(default=3, ge=1, le=10, description="Comment levels kept per post.")
    comments_max: int = Field(default=60, ge=1, le=1000, description="Comments kept per post.")

    # --- operations ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    admin_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Comma-separated Telegram ids allowed to run admin commands."
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password for Flower; required when it listens beyond loopback."
    )
    # --- operations: hnpal up, Flower, metrics, retention -----------------
    flower_address: str = Field(
        default="127.0.0.1", min_length=1, description="Address Flower binds under `hnpal up` (beyond loopback: auth)."
    )
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Port Flower listens on under `hnpal up`.")
    metrics_address: str = Field(default="127.0.0.1", min_length=1, description="Address `hnpal metrics serve` binds.")
    metrics_port: int = Field(default=9808, ge=1, le=65535, description="Port of the pipeline's Prometheus metrics.")
    agent_calls_retention_days: int = Field(
        default=90, ge=1, le=3650, description="agent_calls rows older than this are pruned daily (hnpal.ops.prune)."
    )
    prune_batch_size: int = Field(
        default=5000, ge=100, le=100000, description="Rows deleted per statement (and transaction) by the prune."
    )
    # --- reliability: redelivery of a dead worker's tasks ----------
    broker_visibility_timeout: int = Field(
        default=7200,
        ge=2,
        le=7 * 86400,
        description="Seconds after which Redis redelivers a task whose worker died unacknowledged (kill -9, "
        "power loss); also when a crawl left in flight counts as lost. Must exceed max_countdown.",
    )
    max_countdown: int = Field(
        default=3600,
        ge=1,
        le=7 * 86400,
        description="Longest countdown or ETA of any task (retries and backoffs included; longer ones are capped); "
        "below broker_visibility_timeout.",
    )

    # --- memory and privacy -----------------------------------
    memory_min_confidence: float = Field(
        default=0.6, ge=0, le=1, description="Extracted memory items below this confidence (0-1) are dropped."
    )
    memory_duplicate_similarity: float = Field(
        default=0.85,
        ge=0.5,
        le=1,
        description="An extracted item this similar (0-1, normalized text) to an active memory item is dropped.",
    )
    memory_extraction_max_chars: int = Field(
        default=24000, ge=1000, le=400000, description="Conversation characters sent to memory extraction (the end)."
    )
    memory_reaction_likes: int = Field(
        default=3, ge=2, le=100, description="Liked posts sharing a title keyword or domain that make an interest."
    )
    memory_reaction_window_days: int = Field(
        default=30, ge=1, le=365, description="How far back liked posts count towards a learned interest."
    )
    privacy_grace_days: int = Field(
        default=30, ge=1, le=365, description="Days a /deletemydata account can be restored before it is purged."
    )
    privacy_purge_interval: float = Field(
        default=3600.0, ge=60, le=86400, description="Seconds between purges of accounts past the grace period."
    )
    privacy_audit_salt: SecretStr | None = Field(
        default=None,
        description="Key of the anonymized subject hash in audit_log. Empty: derived from the bot token.",
    )

    # --- discussions ----------------------------------------------
    discussion_context_tokens: int = Field(
        default=6000, ge=500, le=100000, description="Tokens of context (article, comments, memory, past talks)."
    )
    discussion_prompt_max_bytes: int = Field(
        default=100_000, ge=20_000, le=2_000_000, description="Largest discussion prompt (UTF-8 bytes, all parts)."
    )
    discussion_window_messages: int = Field(
        default=10, ge=2, le=100, description="Latest messages sent verbatim; older ones are folded into a summary."
    )
    discussion_comments: int = Field(default=20, ge=0, le=200, description="Top HN comments loaded as context.")
    discussion_related: int = Field(default=3, ge=0, le=20, description="Related past conversations loaded.")
    discussion_max_tokens: int = Field(default=600, ge=50, le=4000, description="Longest discussion answer.")
    discussion_idle_minutes: int = Field(
        default=30, ge=1, le=1440, description="Minutes of silence after which a discussion is closed."
    )
    discussion_daily_messages: int = Field(
        default=100, ge=1, le=100000, description="Discussion (and idle) answers per user per day (UTC)."
    )
    discussion_daily_usd: Decimal = Field(
        default=Decimal("0.50"), ge=0, description="Discussion spend per user per day (USD, UTC day)."
    )

    # --- operator console and human review -------------------------------------------------
    console_address: str = Field(
        default="127.0.0.1", min_length=1, description="Address `hnpal console` binds (loopback by default)."
    )
    console_port: int = Field(default=8710, ge=1, le=65535, description="Port of the operator console.")
    console_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="A console session unused this long is signed out."
    )
    console_https: bool = Field(
        default=False,
        description="The console is served over https (behind a TLS proxy): the session cookie gets Secure.",
    )
    console_login_attempts: int = Field(
        default=5, ge=1, le=1000, description="Failed console logins per operator name within the window."
    )
    console_login_address_attempts: int = Field(
        default=20, ge=1, le=10000, description="Failed console logins per client address within the window."
    )
    console_login_window: int = Field(
        default=900, ge=10, le=86400, description="Seconds the failed-login counts are kept (and logins refused)."
    )
    flower_url: str | None = Field(
        default=None, description="Flower's address as operators reach it (console links). Default: address:port."
    )
    review_summaries: Literal["off", "flagged", "all"] = Field(
        default="off",
        description="Summaries held for review: none, flagged ones (title-only, paywall or failed extraction, "
        "a score above review_score_threshold, a model not seen before), or all.",
    )
    review_answers: Literal["off", "protocol", "all"] = Field(
        default="protocol",
        description="Discussion answers held for review: none, those to users an operator put under review, or all.",
    )
    review_score_threshold: int = Field(
        default=500, ge=0, description="Flagged policy: a post scoring above this has its summary held."
    )
    review_timeout: int = Field(
        default=3600, ge=60, le=7 * 86400, description="Seconds a held item waits for a person before its default."
    )
    review_timeout_summary: Literal["approve", "reject"] = Field(
        default="approve", description="What happens to a summary nobody decided within review_timeout."
    )
    review_timeout_answer: Literal["approve", "reject"] = Field(
        default="reject",
        description="What happens to an answer nobody decided within review_timeout (reject: the polite fallback).",
    )
    review_send_stale: int = Field(
        default=120, ge=1, le=86400, description="Seconds after which a claimed but unsent review send is retried."
    )

    @field_validator("telegram_base_url", mode="before")
    @classmethod
    def _bot_api_base(cls, v: object) -> object:
        # The one place the Bot API base is normalized: every client appends "<token>/<method>".
        return bot_api_base(v) if isinstance(v, str) else v

    @field_validator("crawl_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip().lower() for h in v.split(",") if h.strip()]
        return v

    @field_validator("hn_lists", mode="before")
    @classmethod
    def _split_lists(cls, v: object) -> object:
        if isinstance(v, str):
            v = [x.strip().lower() for x in v.split(",") if x.strip()]
        return v

    @field_validator("hn_lists")
    @classmethod
    def _known_lists(cls, v: list[str]) -> list[str]:
        known = {"top", "new", "best", "ask", "show", "job"}
        unknown = [x for x in v if x not in known]
        if unknown:
            raise ValueError(f"unknown HN list(s) {unknown}; choose from {sorted(known)}")
        return v

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, v: object) -> object:
        if isinstance(v, str):
            return [int(x) for x in v.split(",") if x.strip()]
        return v

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or empty for the embedded PostgreSQL)")
        if v.startswith("postgres://"):
            v = "postgresql://" + v[len("postgres://") :]
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (or empty for the embedded Redis)")
        return v

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", v.get_secret_value()):
            raise ValueError("Telegram accepts 1-256 characters A-Z, a-z, 0-9, _ and -")
        return v

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> Settings:
        if self.telegram_mode == "webhook" and self.telegram_webhook_url is None:
            raise ValueError("telegram_mode=webhook needs HNPAL_TELEGRAM_WEBHOOK_URL")
        return self

    @model_validator(mode="after")
    def _redelivery_after_every_countdown(self) -> Settings:
        # A message waiting out its countdown stays unacknowledged in Redis: were the visibility timeout
        # shorter, Redis would hand it to a second worker while the first still holds it.
        if self.broker_visibility_timeout <= self.max_countdown:
            raise ValueError(
                f"HNPAL_BROKER_VISIBILITY_TIMEOUT ({self.broker_visibility_timeout}) must exceed "
                f"HNPAL_MAX_COUNTDOWN ({self.max_countdown})"
            )
        return self

    @property
    def telegram_overall_rate(self) -> float:
        return 1000.0 if self.telegram_paid_broadcast else self.telegram_global_rate

    @field_validator("telegram_token", "openai_api_key", "flower_basic_auth", "telegram_webhook_secret",
                     "telegram_callback_secret", "telegram_webhook_url", mode="before")  # fmt: skip
    @classmethod
    def _empty_secret(cls, v: object) -> object:
        return None if v == "" else v

    @property
    def content_dir(self) -> Path:
        return (self.content_path or self.data_dir / "content.rocksdb").absolute()

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None


class SettingsError(SystemExit):
    """Raised (as a clean exit) when a setting is invalid. Its message is one line naming the setting."""


def describe_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = err.get("loc")
        if not loc:  # a rule across settings: the message names them
            parts.append(str(err.get("msg")).removeprefix("Value error, "))
            continue
        name = "HNPAL_" + str(loc[0]).upper()
        value = err.get("input")
        shown = "***" if any(s in name for s in ("TOKEN", "KEY", "AUTH", "URL")) else repr(value)
        parts.append(f"{name}={shown}: {err.get('msg')}")
    return "invalid setting " + "; ".join(parts)


PROJECT_DIR = Path(__file__).resolve().parent.parent  # the repository folder (where `make install` ran)


def env_file() -> Path | None:
    """The ``.env`` file to read, whatever the working directory: ``HNPAL_ENV_FILE`` when set (it must
    exist); else the first that exists of ``$HNPAL_HOME/.env``, ``./.env`` (the working directory) and
    the project folder's ``.env``. None when there is none (the environment and defaults only)."""
    explicit = os.environ.get("HNPAL_ENV_FILE", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"HNPAL_ENV_FILE={explicit}: no such file (unset it to use {PROJECT_DIR / '.env'})")
        return path.absolute()
    home = os.environ.get("HNPAL_HOME", "").strip()
    candidates = [Path(home).expanduser() / ".env"] if home else []
    candidates += [Path.cwd() / ".env", PROJECT_DIR / ".env"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.absolute()
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into a one-line SettingsError. A relative
    HNPAL_DATA_DIR or HNPAL_CONTENT_PATH is taken from the folder of the ``.env`` file that was read
    (the working directory when none was), so every command finds the same servers and store."""
    import pydantic_settings

    try:
        path = env_file()
        settings = Settings(_env_file=path, **overrides)  # type: ignore[call-arg]  # a BaseSettings argument, not a field
        if path is not None:
            base = path.parent
            if not settings.data_dir.is_absolute():
                settings.data_dir = base / settings.data_dir
            if settings.content_path is not None and not settings.content_path.is_absolute():
                settings.content_path = base / settings.content_path
        return settings
    except ValidationError as exc:
        raise SettingsError(describe_error(exc)) from None
    except pydantic_settings.SettingsError as exc:  # a JSON value (prices, lists) that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"HNPAL_{field.group(1).upper()}" if field else "a JSON setting"
        raise SettingsError(f"invalid setting {name}: not valid JSON ({exc.__cause__ or exc})") from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
