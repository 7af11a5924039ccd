"""The `ray-ft-webhook` command line: options (flags and RAY_FT_WEBHOOK_* variables), `serve`, `render`,
`certs`, and `main`, which dispatches to them."""
