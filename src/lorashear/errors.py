"""One exception type for every error a user can act on; the CLI catches it once."""


class LorashearError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
