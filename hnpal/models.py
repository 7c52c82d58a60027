"""Every ORM model, imported in one place so the metadata is complete (Alembic, tests)."""

from hnpal.audit.models import AuditLog
from hnpal.console.models import ConsoleSession, Operator
from hnpal.conversations.models import Conversation
from hnpal.db.base import Base
from hnpal.deliveries.models import Delivery, Digest, UserAffinity
from hnpal.llm.models import ProviderHealth
from hnpal.memory.models import Memory
from hnpal.posts.models import Post
from hnpal.relevance.models import InterestTopics, UserTopicAffinity
from hnpal.review.models import EditTag, QuarantinedMessage, ReviewItem, ReviewSend, UserProtocol
from hnpal.summaries.models import Summary
from hnpal.telegram.models import TelegramUpdate
from hnpal.usage.models import AgentCall, LLMCostDaily, LLMReservation, UserTokenUsage
from hnpal.users.models import User

__all__ = [
    "AgentCall",
    "AuditLog",
    "ConsoleSession",
    "EditTag",
    "Operator",
    "QuarantinedMessage",
    "ReviewItem",
    "ReviewSend",
    "UserProtocol",
    "Base",
    "Conversation",
    "Delivery",
    "Digest",
    "InterestTopics",
    "LLMCostDaily",
    "LLMReservation",
    "Memory",
    "ProviderHealth",
    "Post",
    "Summary",
    "TelegramUpdate",
    "User",
    "UserAffinity",
    "UserTopicAffinity",
    "UserTokenUsage",
]
