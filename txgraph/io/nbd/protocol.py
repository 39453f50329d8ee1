"""NBD wire-protocol constants and the fixed-size structures both ends share.

Values are those of the NBD protocol specification (``doc/proto.md`` of the
NetworkBlockDevice project), which QEMU's ``include/block/nbd.h`` follows. All
integers on the wire are big-endian.
"""

from __future__ import annotations

import errno as E
import struct
from typing import Final

__all__ = [
    "NBDMAGIC",
    "IHAVEOPT",
    "REPLY_MAGIC_OPT",
    "REQUEST_MAGIC",
    "SIMPLE_REPLY_MAGIC",
    "STRUCTURED_REPLY_MAGIC",
    "MAX_BUFFER_SIZE",
    "REQUEST",
    "SIMPLE_REPLY",
    "STRUCTURED_HDR",
    "OPT_HDR",
    "OPT_REPLY_HDR",
    "errno_to_nbd",
    "nbd_to_errno",
]

# -- handshake ---------------------------------------------------------------------------
NBDMAGIC: Final = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT: Final = 0x49484156454F5054  # "IHAVEOPT"
REPLY_MAGIC_OPT: Final = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE: Final = 1 << 0  # server handshake flags
FLAG_NO_ZEROES: Final = 1 << 1
FLAG_C_FIXED_NEWSTYLE: Final = 1 << 0  # client flags
FLAG_C_NO_ZEROES: Final = 1 << 1

OPT_EXPORT_NAME: Final = 1
OPT_ABORT: Final = 2
OPT_LIST: Final = 3
OPT_STARTTLS: Final = 5
OPT_INFO: Final = 6
OPT_GO: Final = 7
OPT_STRUCTURED_REPLY: Final = 8
OPT_LIST_META_CONTEXT: Final = 9
OPT_SET_META_CONTEXT: Final = 10

REP_ACK: Final = 1
REP_SERVER: Final = 2
REP_INFO: Final = 3
REP_META_CONTEXT: Final = 4
_REP_ERR: Final = 1 << 31
REP_ERR_UNSUP: Final = _REP_ERR | 1
REP_ERR_POLICY: Final = _REP_ERR | 2
REP_ERR_INVALID: Final = _REP_ERR | 3
REP_ERR_PLATFORM: Final = _REP_ERR | 4
REP_ERR_TLS_REQD: Final = _REP_ERR | 5
REP_ERR_UNKNOWN: Final = _REP_ERR | 6
REP_ERR_SHUTDOWN: Final = _REP_ERR | 7
REP_ERR_BLOCK_SIZE_REQD: Final = _REP_ERR | 8
REP_ERR_TOO_BIG: Final = _REP_ERR | 9

INFO_EXPORT: Final = 0
INFO_NAME: Final = 1
INFO_DESCRIPTION: Final = 2
INFO_BLOCK_SIZE: Final = 3

# -- transmission flags (per export) ------------------------------------------------------
FLAG_HAS_FLAGS: Final = 1 << 0
FLAG_READ_ONLY: Final = 1 << 1
FLAG_SEND_FLUSH: Final = 1 << 2
FLAG_SEND_FUA: Final = 1 << 3
FLAG_ROTATIONAL: Final = 1 << 4
FLAG_SEND_TRIM: Final = 1 << 5
FLAG_SEND_WRITE_ZEROES: Final = 1 << 6
FLAG_SEND_DF: Final = 1 << 7
FLAG_CAN_MULTI_CONN: Final = 1 << 8
FLAG_SEND_RESIZE: Final = 1 << 9
FLAG_SEND_CACHE: Final = 1 << 10
FLAG_SEND_FAST_ZERO: Final = 1 << 11

# -- transmission --------------------------------------------------------------------------
REQUEST_MAGIC: Final = 0x25609513
SIMPLE_REPLY_MAGIC: Final = 0x67446698
STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF

CMD_READ: Final = 0
CMD_WRITE: Final = 1
CMD_DISC: Final = 2
CMD_FLUSH: Final = 3
CMD_TRIM: Final = 4
CMD_CACHE: Final = 5
CMD_WRITE_ZEROES: Final = 6
CMD_BLOCK_STATUS: Final = 7

CMD_FLAG_FUA: Final = 1 << 0
CMD_FLAG_NO_HOLE: Final = 1 << 1
CMD_FLAG_DF: Final = 1 << 2
CMD_FLAG_REQ_ONE: Final = 1 << 3
CMD_FLAG_FAST_ZERO: Final = 1 << 4

REPLY_FLAG_DONE: Final = 1 << 0
REPLY_TYPE_NONE: Final = 0
REPLY_TYPE_OFFSET_DATA: Final = 1
REPLY_TYPE_OFFSET_HOLE: Final = 2
REPLY_TYPE_BLOCK_STATUS: Final = 5
REPLY_TYPE_ERROR: Final = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET: Final = (1 << 15) | 2

STATE_HOLE: Final = 1 << 0  # base:allocation flags
STATE_ZERO: Final = 1 << 1
META_BASE_ALLOCATION: Final = "base:allocation"

#: Largest READ/WRITE payload QEMU's server accepts (``NBD_MAX_BUFFER_SIZE``).
MAX_BUFFER_SIZE: Final = 32 * 1024 * 1024
#: Longest export name / string the protocol allows.
MAX_STRING_SIZE: Final = 4096

# -- structures ------------------------------------------------------------------------------
REQUEST: Final = struct.Struct(">IHHQQI")  # magic, flags, type, cookie, offset, length
SIMPLE_REPLY: Final = struct.Struct(">IIQ")  # magic, error, cookie
STRUCTURED_HDR: Final = struct.Struct(">IHHQI")  # magic, flags, type, cookie, length
OPT_HDR: Final = struct.Struct(">QII")  # IHAVEOPT, option, length
OPT_REPLY_HDR: Final = struct.Struct(">QIII")  # magic, option, reply type, length

# -- error numbers: the protocol has its own (Linux-valued) small set ----------------------
_NBD_ERRNOS: Final = {
    E.EPERM: 1,
    E.EIO: 5,
    E.ENOMEM: 12,
    E.EINVAL: 22,
    E.ENOSPC: 28,
    E.EOVERFLOW: 75,
    E.ENOTSUP: 95,
    E.ESHUTDOWN: 108,
}
_FROM_NBD: Final = {v: k for k, v in _NBD_ERRNOS.items()}


def errno_to_nbd(err: int) -> int:
    """Map a host errno to the protocol's value (QEMU's ``system_errno_to_nbd_errno``).

    Anything the protocol cannot name travels as EINVAL, as QEMU does; EDQUOT and
    EFBIG are reported as ENOSPC.
    """
    if err in (E.EDQUOT, E.EFBIG):
        return _NBD_ERRNOS[E.ENOSPC]
    return _NBD_ERRNOS.get(err, _NBD_ERRNOS[E.EINVAL])


def nbd_to_errno(err: int) -> int:
    """The inverse mapping (QEMU's ``nbd_errno_to_system_errno``); unknown values are EINVAL."""
    return _FROM_NBD.get(err, E.EINVAL)
