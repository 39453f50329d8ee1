"""qemu-io's timing lines are never compared, whatever their length.

qemu-io prints ``64 KiB, 1 ops; 00.00 sec (...)`` after a request, and from a second
on ``4 KiB, 1 ops; 0:00:04.00 (...)`` without "sec": a throttled guest request once
made the fuzzer report a difference of 0:00:04.00 against 0:00:03.99 (fuzz
58c8d6c625). Both forms are dropped; what the guest did stays.
"""

from __future__ import annotations

from tests.support.guest_io import normalise_qemu_io

_OUTPUT = """wrote 4096/4096 bytes at offset 65536
4 KiB, 1 ops; 0:00:04.00 (1.001 KiB/sec and 0.2503 ops/sec)
Pattern verification failed at offset 65536, 4096 bytes
read 4096/4096 bytes at offset 65536
64 KiB, 1 ops; 00.00 sec (19.378 MiB/sec and 310.0385 ops/sec)
512 bytes, 1 ops; 0.0001 sec (3.425 MiB/sec and 7012.6227 ops/sec)
"""


def test_timing_lines_of_every_length_are_dropped() -> None:
    assert normalise_qemu_io(_OUTPUT, None) == [
        "wrote 4096/4096 bytes at offset 65536",
        "Pattern verification failed at offset 65536, 4096 bytes",
        "read 4096/4096 bytes at offset 65536",
    ]
