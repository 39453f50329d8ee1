"""qcow/qcow2 inflate: the fast path and QEMU's one-call inflate agree on every stream.

:mod:`txgraph.io.qcow2.inflate` answers with zlib-ng when it fills the cluster and
with the system libz's single ``inflate(Z_FINISH)`` call (QEMU's) otherwise. Both
must give one answer for any input: the same bytes, or a refusal. Streams are
random mixes of runs, noise and repeats, compressed with any window and level,
then often corrupted. A few are also read by qemu-img, the final word on what
QEMU 7.2 accepts.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imgkit import open_chain
from test_io_qcow2_inflate import _compressed_image, _point_cluster0_at, _qemu_raw

from txgraph.errors import IOFailure
from txgraph.io.qcow2.inflate import (
    FAST_PATH,
    InflateError,
    inflate_cluster,
    inflate_cluster_libz,
)


def _stream(rng: random.Random, cluster_size: int) -> bytes:
    """Raw deflate of random runs, noise and repeats, then maybe corrupted."""
    parts: list[bytes] = []
    target = cluster_size * rng.choice([1, 1, 2])
    while sum(map(len, parts)) < target:
        kind = rng.random()
        if kind < 0.3:
            parts.append(bytes([rng.randrange(256)]) * rng.randrange(1, 5000))
        elif kind < 0.6 or not parts:
            parts.append(rng.randbytes(rng.randrange(1, 300)))
        else:
            parts.append(rng.choice(parts))
    co = zlib.compressobj(
        rng.randrange(1, 10), zlib.DEFLATED, rng.choice([-9, -12, -15]), rng.randrange(1, 10)
    )
    stream = bytearray(co.compress(b"".join(parts)) + co.flush())
    mutation = rng.random()
    if mutation < 0.4:
        for _ in range(rng.randrange(1, 4)):
            stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
    elif mutation < 0.55:
        del stream[rng.randrange(len(stream) + 1) :]
    elif mutation < 0.65:
        stream = bytearray(rng.randbytes(rng.randrange(1, 2000)))
    return bytes(stream)


def _answer(inflate: Any, data: bytes, cluster_size: int) -> bytes | None:
    try:
        out: bytes = inflate(data, cluster_size)
    except InflateError:
        return None
    return out


def test_the_fast_path_is_installed() -> None:
    # zlib-ng is a declared dependency: without it every read takes the slow path
    assert FAST_PATH


@given(seed=st.integers(0, 2**32 - 1), cluster_size=st.sampled_from([512, 4096, 65536]))
def test_fast_path_answers_as_qemus_inflate_call(seed: int, cluster_size: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        data = _stream(rng, cluster_size)
        want = _answer(inflate_cluster_libz, data, cluster_size)
        assert _answer(inflate_cluster, data, cluster_size) == want
        if want is not None:
            assert len(want) == cluster_size


def test_a_thousand_streams_answer_alike() -> None:
    """A fixed sample, so the comparison's size does not depend on the profile."""
    rng = random.Random(20261202)
    accepted = 0
    for _ in range(1000):
        cluster_size = rng.choice([512, 4096, 65536])
        data = _stream(rng, cluster_size)
        want = _answer(inflate_cluster_libz, data, cluster_size)
        assert _answer(inflate_cluster, data, cluster_size) == want
        accepted += want is not None
    assert 300 < accepted < 900  # both outcomes are well represented


@pytest.mark.parametrize("seed", range(12))
def test_qemu_img_reads_what_txgraph_reads(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = _stream(rng, 65536)
    img = _compressed_image(tmp_path)
    _point_cluster0_at(img, data)
    want = _qemu_raw(tmp_path, img)
    node: Any = open_chain(img)
    if want is None:
        with pytest.raises(IOFailure):
            node.read(0, 65536)
    else:
        assert node.read(0, 65536) == want[:65536]
