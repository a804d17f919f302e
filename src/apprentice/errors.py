"""Errors a user can fix. The CLI prints them as one line and exits with code 2 (no traceback unless --debug)."""


class UserError(Exception):
    """Bad input, a bad spec, a missing file: the message says what to fix."""


class BackendError(UserError):
    """A model backend failed in a way retries cannot mend (wrong model name, bad key, server gone)."""
