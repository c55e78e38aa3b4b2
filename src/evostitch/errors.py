"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class EvostitchError(Exception):
    """Bad input or an unusable model/file: message is shown to the user as is."""
