"""Crawling: fetch an article safely, extract clean text and markdown, hand them to the content writer."""
