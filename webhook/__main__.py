"""`python -m webhook` is `ray-ft-webhook`."""

from webhook.cli import main

raise SystemExit(main())
