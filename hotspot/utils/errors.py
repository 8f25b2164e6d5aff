"""The one exception type users see.

Every check on user input raises HotspotError with a message that names the
file, dataset or template key and what was expected; the CLI prints the
message and exits non-zero instead of showing a traceback.
"""


class HotspotError(Exception):
    """An error in the user's input or configuration, with an actionable message."""


def require(condition, message):
    """Raise HotspotError(message) unless condition holds."""
    if not condition:
        raise HotspotError(message)
