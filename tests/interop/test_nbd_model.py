"""Property: any sequence of NBD requests leaves the export equal to a bytearray model."""

from __future__ import annotations

import errno as E
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from nbd_support import serve_raw

from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.client import NbdClient, NbdError

SIZE = 64 * 1024

_offsets = st.integers(0, SIZE + 4096)
_lengths = st.integers(0, 9000)
_op = st.one_of(
    st.tuples(st.just("write"), _offsets, _lengths, st.integers(0, 255)),
    st.tuples(st.just("zero"), _offsets, _lengths, st.booleans()),
    st.tuples(st.just("trim"), _offsets, _lengths, st.just(0)),
    st.tuples(st.just("read"), _offsets, _lengths, st.booleans()),
    st.tuples(st.just("flush"), st.just(0), st.just(0), st.just(0)),
)


@given(st.lists(_op, max_size=25), st.booleans())
def test_nbd_requests_match_a_model(ops: list[tuple[str, int, int, int]], structured: bool) -> None:
    model = bytearray(bytes(range(256)) * (SIZE // 256))
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_raw(Path(tmp), bytes(model)) as s,
        NbdClient(s.addr, "disk", structured=structured) as c,
    ):
        for kind, off, length, arg in ops:
            in_range = off + length <= SIZE
            try:
                if kind == "write":
                    c.write(off, bytes([arg]) * length)
                elif kind == "zero":
                    c.write_zeroes(off, length, may_unmap=bool(arg))
                elif kind == "trim":
                    c.trim(off, length)
                elif kind == "read":
                    assert c.read(off, length) == bytes(model[off : off + length])
                else:
                    c.flush()
            except NbdError as e:
                assert not in_range and e.errno == E.EINVAL, (kind, off, length, e)
                continue
            assert in_range or kind == "flush", (kind, off, length)
            if kind == "write":
                model[off : off + length] = bytes([arg]) * length
            elif kind == "zero":
                model[off : off + length] = bytes(length)
            # trim: NBD leaves trimmed contents unspecified; re-sync the model from the file.
            elif kind == "trim":
                model[off : off + length] = s.image.read_bytes()[off : off + length]
        assert c.read(0, SIZE) == bytes(model)
        assert c.flags & P.FLAG_SEND_TRIM
