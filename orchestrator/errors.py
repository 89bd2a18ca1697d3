"""The one exception type for mistakes a user can make (config, data, preference vector, paths)."""


class MoaError(ValueError):
    """A user-facing error: the message says what was wrong and what is accepted.

    The CLI prints it on one line and exits non-zero; the server answers 4xx with it.
    """
