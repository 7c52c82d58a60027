"""``hnpal demo``: the main job, offline, on embedded defaults.

It starts what a deployment runs (the embedded PostgreSQL and Redis unless URLs are configured, the
content writer, a worker for the pipeline queues, a worker for the ``telegram`` queue, one beat and the
bot), points HN Pal at two sandbox servers (the HN API replaying the bundled snapshot, and a local Telegram
Bot API with Telegram's flood limits), and runs the main job:

1. fetch -> crawl -> content store -> summarize (offline extractive provider, no key needed);
2. meanwhile three simulated Telegram users of different interests and styles meet the bot through real
   updates (``/start``, topic buttons, ``/settings`` menus, typed answers);
3. once the posts are summarized each user sets their delivery time to the next minute in their own
   time zone, and beat's scheduler sends each their digest (selection, summaries in their style, send);
4. every digest is printed as Telegram would show it, a few buttons are pressed (👍, 💾, a brief digest's
   number, 👎) and their effects shown;
5. Ada discusses a post (💬, two questions answered on the ``llm`` queue with the article, the HN thread
   and her memory as context, then ``/done``), the memory extraction that follows is shown with
   ``/memory``, then the database state in brief.

It stops everything it started (children, sandbox servers, embedded servers) whatever happens, and
exits 0 only when every step worked.

The package: :mod:`.stack` starts and stops everything, :mod:`.main_job` runs the steps in order;
:mod:`.pipeline` (steps 1-4), :mod:`.chats` (the simulated users), :mod:`.digests` (steps 5-6),
:mod:`.discussion` (step 7) and :mod:`.report` (step 8) do them; :mod:`.render` shows Telegram messages in
the terminal; :mod:`.common` holds the users, timings and the error they share.
"""

from hnpal.demo.stack import run_demo

__all__ = ["run_demo"]
