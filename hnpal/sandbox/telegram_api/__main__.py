"""``python -m hnpal.sandbox.telegram_api``: serve the sandbox Bot API on a port (see :func:`.server.main`)."""

from hnpal.sandbox.telegram_api.server import main

raise SystemExit(main())
