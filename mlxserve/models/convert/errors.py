"""The one error type conversion raises: its message is a single line meant for the user."""


class ConversionError(Exception):
    """A model could not be converted; `str(error)` says why in one line."""
