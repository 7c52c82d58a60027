"""registrable domains and the submitter's text: posts keep the domain HN shows, mutes and affinities follow

``posts.domain`` held the whole host (``en.wikipedia.org``); it is now the registrable domain from the
Public Suffix List (``wikipedia.org``), as HN shows it. This recomputes the stored domains (one UPDATE
per distinct host), merges the users' domain affinities that now share a key (their weights summed), and
normalizes the muted domains in ``users.digest_preferences`` the same way, so muting a domain mutes its
subdomains. The downgrade keeps the registrable domains: the hosts they came from are not recorded.

``posts.has_hn_text`` says the submitter's own text of a post with a URL (a Show HN's words) is stored
beside the article (RocksDB ``hn_text``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 04:30:00+00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from hnpal.crawl.urls import normalize_domain, registrable_domain

    op.add_column("posts", sa.Column("has_hn_text", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    conn = op.get_bind()
    hosts = conn.execute(
        sa.text(
            "SELECT domain FROM posts WHERE domain IS NOT NULL"
            " UNION SELECT key FROM user_affinity WHERE kind = 'domain'"
        )
    ).scalars()
    mapping = [{"old": h, "new": registrable_domain(h)} for h in hosts if h]
    mapping = [m for m in mapping if m["new"] and m["new"] != m["old"]]
    if mapping:
        conn.execute(sa.text("CREATE TEMP TABLE domain_map (old text PRIMARY KEY, new text NOT NULL) ON COMMIT DROP"))
        conn.execute(sa.text("INSERT INTO domain_map (old, new) VALUES (:old, :new)"), mapping)
        conn.execute(sa.text("UPDATE posts p SET domain = m.new FROM domain_map m WHERE p.domain = m.old"))
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE affinity_merged ON COMMIT DROP AS"
                " SELECT a.user_id, coalesce(m.new, a.key) AS key, sum(a.weight)::int AS weight"
                " FROM user_affinity a LEFT JOIN domain_map m ON m.old = a.key"
                " WHERE a.kind = 'domain' GROUP BY 1, 2"
            )
        )
        conn.execute(sa.text("DELETE FROM user_affinity WHERE kind = 'domain'"))
        conn.execute(
            sa.text(
                "INSERT INTO user_affinity (user_id, kind, key, weight)"
                " SELECT user_id, 'domain', key, weight FROM affinity_merged"
            )
        )
    users = conn.execute(
        sa.text(
            "SELECT id, digest_preferences->'muted_domains' FROM users"
            " WHERE jsonb_typeof(digest_preferences->'muted_domains') = 'array'"
            " AND jsonb_array_length(digest_preferences->'muted_domains') > 0"
        )
    ).all()
    for user_id, muted in users:
        normalized = list(dict.fromkeys(normalize_domain(d) for d in muted if isinstance(d, str) and d.strip()))
        if normalized != muted:
            conn.execute(
                sa.text(
                    "UPDATE users SET digest_preferences = jsonb_set(digest_preferences, '{muted_domains}',"
                    " CAST(:muted AS jsonb)) WHERE id = :id"
                ),
                {"id": user_id, "muted": json.dumps(normalized)},
            )


def downgrade() -> None:
    op.drop_column("posts", "has_hn_text")
    # the registrable domains stay: the hosts they were computed from are not recorded
