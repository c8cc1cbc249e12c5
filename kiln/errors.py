"""The one exception type for errors a user can cause (bad model folder, bad flag, ...).

The CLI prints its message and exits non-zero; the server maps it to a 400. Every stage may
raise it; asserts stay for invariants only.
"""


class KilnError(ValueError):
    """A user-facing error whose message says what is wrong and how to fix it."""
