"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class UnlearnkitError(Exception):
    """A mistake in the user's input (data, config, checkpoint) that they can fix; the message says how."""


class DataError(UnlearnkitError, ValueError):
    """A data set, split or file is missing, malformed or unusable."""


class ConfigError(UnlearnkitError, ValueError):
    """A configuration value is invalid or combines options that cannot work together."""


class CheckpointError(UnlearnkitError, ValueError):
    """A weights file does not match the model it is loaded into, or cannot be read safely."""
