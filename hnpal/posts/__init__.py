"""HN posts: metadata, crawl state and the default summary."""
