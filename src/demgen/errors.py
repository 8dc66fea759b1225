"""Error types the CLI turns into one-line messages with exit code 2."""


class DemgenError(Exception):
    """Base class for errors a user can fix; the CLI prints the message, not a traceback."""


class InputError(DemgenError):
    """A file or argument is missing, unreadable or inconsistent; the message names it."""


class MissingCRSError(InputError):
    """A raster has no CRS where georeferencing is required; raised by
    :func:`demgen.io.raster.require_crs`, the one place that spells the message."""


class CheckpointError(InputError):
    """A checkpoint is missing, damaged, not demgen's, or holds more than plain data."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
