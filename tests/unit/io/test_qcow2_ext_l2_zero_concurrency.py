"""Zero writes and data writes into shared extended-L2 entries from several threads.

With extended L2 entries, a partial zero write edits the cluster's subcluster bitmap
(``Qcow2Writer._zero_subclusters``) and a partial data write sets allocation bits in
the same bitmap, both under the node's lock. Each thread here owns every fourth
subcluster of the same 16 clusters, so the threads keep editing the same L2 entries
and the same bitmaps; a lost bitmap update, or a zero check racing another thread's
write, shows as wrong data in some thread's own subclusters or as an image
``qemu-img check`` refuses. The expected content is each thread's own model.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from imgkit import open_node, qemu_img

pytestmark = pytest.mark.timeout(120)

CLUSTER = 65536
SUB = CLUSTER // 32
CLUSTERS = 16
THREADS = 4
OPS = 300


def test_threads_sharing_bitmaps_keep_their_own_data(tmp_path: Path) -> None:
    image = tmp_path / "x.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", image, "1M")
    file = open_node("file", {"filename": str(image)})
    qcow2 = open_node("qcow2", {}, {"file": file})
    models = [bytearray(CLUSTERS * CLUSTER) for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        rng = random.Random(t)
        model = models[t]
        own = [i for i in range(CLUSTERS * 32) if i % THREADS == t]
        try:
            start.wait(30)
            for _ in range(OPS):
                base = rng.choice(own) * SUB
                lo = rng.choice((0, 0, rng.randrange(0, SUB, 512)))
                hi = rng.choice((SUB, SUB, rng.randrange(lo + 512, SUB + 1, 512)))
                if rng.random() < 0.5:
                    qcow2.write_zeroes(base + lo, hi - lo, may_unmap=rng.random() < 0.5)
                    model[base + lo : base + hi] = bytes(hi - lo)
                else:
                    data = bytes([rng.randrange(1, 256)]) * (hi - lo)
                    qcow2.write(base + lo, data)
                    model[base + lo : base + hi] = data
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(90)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    got = qcow2.read(0, CLUSTERS * CLUSTER)
    for t in range(THREADS):
        for i in range(t, CLUSTERS * 32, THREADS):
            span = slice(i * SUB, (i + 1) * SUB)
            assert got[span] == models[t][span], f"thread {t}, subcluster {i}"
    qcow2.close()
    file.close()
    check = json.loads(qemu_img("check", "--output=json", image))
    assert (check["check-errors"], check.get("corruptions", 0), check.get("leaks", 0)) == (0, 0, 0)
    # what QEMU reads from the image is what the threads wrote
    raw = tmp_path / "x.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", image, raw)
    assert raw.read_bytes()[: CLUSTERS * CLUSTER] == got
