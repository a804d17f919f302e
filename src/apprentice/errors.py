"""Errors a user can fix. The CLI prints them as one line and exits with code 2 (no traceback unless --debug)."""


class UserError(Exception):
    """Bad input, a bad spec, a missing file: the message says what to fix."""


class BackendError(UserError):
    """A model backend failed in a way retries cannot mend (wrong model name, bad key, server gone)."""


class RetriesExhausted(BackendError):
    """One request still failed (429, 5xx, timeouts, dropped connections) after every retry: the server may mend,
    so a long run records it and goes on (`BackendOptions.keep_going`)."""
