"""HN ingestion: the Firebase API client, item classification, batched upserts, comment threads."""
