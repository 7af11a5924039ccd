"""`python -m webhook` is `ray-ft-webhook`."""

from webhook.cli.main import main

raise SystemExit(main())
