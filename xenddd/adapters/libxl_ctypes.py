"""libxl through ctypes, as the programs that call it in a process of their own open it (`libxl_create`,
`libxl_device_server`): the libraries found, a logger on standard error, a context.

Only opaque buffers cross into libxl: a libxl structure is made by its own `_init`, filled by its own
`_from_json` and freed by its `_dispose`, so that its layout, which changes between Xen releases, never
matters here (each buffer is far larger than the structure in Xen 4.17 to 4.20).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
from dataclasses import dataclass

BUFFER = 1 << 16  # bytes for any libxl structure: libxl_domain_config is about 2 KiB, a device far less
LIBXL_VERSION = 0
# xentoollog_level: XTL_NONE, XTL_DEBUG, XTL_VERBOSE, XTL_DETAIL, XTL_PROGRESS, XTL_INFO, XTL_NOTICE, ...
XTL_NOTICE = 6


class LibxlError(Exception):
    pass


def library(name: str) -> ctypes.CDLL:
    found = ctypes.util.find_library(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/*/lib{name}.so.*"))), None
    )
    if found is None:
        raise LibxlError(f"lib{name} is not installed (Debian: libxenmisc / libxentoollog)")
    return ctypes.CDLL(found, use_errno=True)


@dataclass
class Context:
    """An open libxl context whose messages (notices and worse) go to standard error."""

    lib: ctypes.CDLL
    ctx: ctypes.c_void_p
    _toollog: ctypes.CDLL
    _logger: int

    def close(self) -> None:
        self.lib.libxl_ctx_free(self.ctx)
        self._toollog.xtl_logger_destroy(self._logger)


def open_context(lib: ctypes.CDLL | None = None) -> Context:
    xl = lib or library("xenlight")
    toollog = library("xentoollog")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    toollog.xtl_createlogger_stdiostream.restype = ctypes.c_void_p
    toollog.xtl_createlogger_stdiostream.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    toollog.xtl_logger_destroy.argtypes = [ctypes.c_void_p]
    xl.libxl_ctx_alloc.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    xl.libxl_ctx_free.argtypes = [ctypes.c_void_p]
    logger = toollog.xtl_createlogger_stdiostream(libc.fdopen(2, b"w"), XTL_NOTICE, 0)
    if not logger:
        raise LibxlError("cannot create libxl's logger")
    ctx = ctypes.c_void_p()
    if xl.libxl_ctx_alloc(ctypes.byref(ctx), LIBXL_VERSION, 0, logger) != 0:
        toollog.xtl_logger_destroy(logger)
        raise LibxlError("cannot open a libxl context (not root, or no Xen?)")
    return Context(xl, ctx, toollog, logger)
