"""What a xenstore request can fail with, as typed errors every caller may catch."""

from __future__ import annotations

import errno
from collections.abc import Callable

from xenddd.errors import XendddError


class XenstoreError(XendddError):
    """xenstored refused a request; `errno` is the POSIX code it named (ENOENT, EACCES, EAGAIN...)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.errno = code


class XenstoreUnavailable(XenstoreError):
    """No connection to xenstored, or it was lost while the request was in flight."""


class XenstoreTimeout(XenstoreUnavailable):
    """xenstored did not answer within the call's deadline; the connection has been dropped."""


class XenstoreConflict(XenstoreError):
    """A transaction kept failing with EAGAIN (concurrent writers) and the retry bound was reached."""


def absent_as_none(call: Callable[[], bytes]) -> bytes | None:
    """The call's answer, or None where xenstored said ENOENT: absence is the normal answer in a world of
    vanishing domains, not an error."""
    try:
        return call()
    except XenstoreUnavailable:
        raise
    except XenstoreError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def value_or_none(result: bytes | XenstoreError) -> bytes | None:
    """A pipelined result as `absent_as_none` would give it."""
    if isinstance(result, XenstoreError):
        if result.errno == errno.ENOENT:
            return None
        raise result
    return result
