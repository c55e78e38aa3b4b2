"""Errors a user can cause, by kind. The CLI prints any of them as one line and exits 2.

Every public call raises one of these, never a bare built-in exception, on bad input:
catch `EvostitchError` for all of them, or a subclass for one kind.
"""


class EvostitchError(Exception):
    """Bad input or an unusable model/file: the message is shown to the user as is."""


class ModelError(EvostitchError):
    """A model spec, weights file or network that cannot be built, loaded or traced."""


class DataError(EvostitchError):
    """A dataset spec, folder or batch that is missing or does not fit the models."""


class MatchingError(EvostitchError):
    """Graphs or fixed pairs that cannot be matched as asked."""


class SupernetError(EvostitchError):
    """A genotype, stitch or saved supernetwork that does not fit the supernetwork."""


class SearchError(EvostitchError):
    """Search options, an algorithm name or an algorithm state that cannot be used."""


class RunError(EvostitchError):
    """A run folder that is missing, damaged, in use, or lacks what was asked of it."""


class DeviceError(EvostitchError):
    """A device or a precision this machine or this torch cannot use."""


class ExportError(EvostitchError):
    """An offspring that cannot be written as standalone code and weights."""
