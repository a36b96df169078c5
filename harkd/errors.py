"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class HarkdError(Exception):
    """A problem with the user's input (file, config, dataset): its message names what and where."""
