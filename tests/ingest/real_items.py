"""HN items as the real API returns them, for the ingest tests.

Recorded items are copied verbatim from the official HN API README (github.com/HackerNews/API,
README.md, "Items" section: 8863, 121003, 126809, 160705, 2921983), which shows them as served by
``https://hacker-news.firebaseio.com/v0/item/<id>.json?print=pretty``, and from an HN API client's
recorded item list (a public React demo's mock data, found by code search: 126811, 8869, and the
later 8863 with 33 kids and score 104). Items written here for cases no recording covers live in the
tests themselves, in the shape the API uses.
"""

from __future__ import annotations

# A story with a URL (the recorded list's copy).
STORY_8863 = {
    "by": "dhouston",
    "descendants": 71,
    "id": 8863,
    "kids": [
        9224,
        8917,
        8952,
        8958,
        8884,
        8887,
        8869,
        8940,
        8908,
        9005,
        8873,
        9671,
        9067,
        9055,
        8865,
        8881,
        8872,
        8955,
        10403,
        8903,
        8928,
        9125,
        8998,
        8901,
        8902,
        8907,
        8894,
        8870,
        8878,
        8980,
        8934,
        8943,
        8876,
    ],
    "score": 104,
    "time": 1175714200,
    "title": "My YC app: Dropbox - Throw away your USB drive",
    "type": "story",
    "url": "http://www.getdropbox.com/u/2/screencast.html",
}

# HackerNews/API README: an Ask HN with text (its "kids" trimmed to the three the README lists).
ASK_121003 = {
    "by": "tel",
    "descendants": 16,
    "id": 121003,
    "kids": [121016, 121109, 121168],
    "score": 25,
    "text": (
        "<i>or</i> HN: the Next Iteration<p>I get the impression that with Arc being released a lot of "
        "people who never had time for HN before are suddenly dropping in more often. (PG: what are the "
        "numbers on this? I'm envisioning a spike.)<p>Not to say that isn't great, but I'm wary of "
        "Diggification. Between links comparing programming to sex and a flurry of gratuitous, ostentatious "
        " adjectives in the headlines it's a bit concerning.<p>80% of the stuff that makes the front page "
        "is still pretty awesome, but what's in place to keep the signal/noise ratio high? Does the HN model "
        "still work as the community scales? What's in store for (++ HN)?"
    ),
    "time": 1203647620,
    "title": "Ask HN: The Arc Effect",
    "type": "story",
}

# HackerNews/API README: a poll with an empty text, and one poll option (of another poll, 160704).
POLL_126809 = {
    "by": "pg",
    "descendants": 54,
    "id": 126809,
    "kids": [126822, 126823, 126993, 126824, 126934, 127411, 126888, 127681, 126818, 126816, 126854, 127095],
    "parts": [126810, 126811, 126812],
    "score": 46,
    "text": "",
    "time": 1204403652,
    "title": "Poll: What would happen if News.YC had explicit support for polls?",
    "type": "poll",
}
POLLOPT_160705 = {
    "by": "pg",
    "id": 160705,
    "poll": 160704,
    "score": 335,
    "text": "Yes, ban them; I'm tired of seeing Valleywag stories on News.YC.",
    "time": 1207886576,
    "type": "pollopt",
}
# The recorded list: an option of poll 126809.
POLLOPT_126811 = {
    "by": "pg",
    "id": 126811,
    "poll": 126809,
    "score": 49,
    "text": (
        "Users would create fewer polls, because the main reason they do it now is to get karma from people "
        "voting up the poll choices."
    ),
    "time": 1204403652,
    "type": "pollopt",
}

# HackerNews/API README: a comment.
COMMENT_2921983 = {
    "by": "norvig",
    "id": 2921983,
    "kids": [2922097, 2922429, 2924562, 2922709, 2922573, 2922140, 2922141],
    "parent": 2921506,
    "text": (
        "Aw shucks, guys ... you make me blush with your compliments.<p>Tell you what, Ill make a deal: "
        "I'll keep writing if you keep reading. K?"
    ),
    "time": 1314211127,
    "type": "comment",
}
