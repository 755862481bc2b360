"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad option, missing or malformed data). Message: what + what to do."""
