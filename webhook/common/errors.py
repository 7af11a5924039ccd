"""InputError: configuration or a file the user gave cannot be used. Every command turns it into one line
on stderr and exit code 2; `serve` raises it before listening, so a bad setting never half-starts."""

from __future__ import annotations


class InputError(ValueError):
    """Unusable input; the message names the file, flag or object and what is wrong with it."""
