"""User-facing errors that the command line reports as one line (no traceback) with a non-zero exit."""


class ConfigError(ValueError):
    """A job config is missing a required field or asks for something impossible; the message names the field."""
