#!/usr/bin/env python3
"""How long the disk under DIR takes to make a small write durable.

Every commit of the broker's database waits for one such flush (PostgreSQL's
write-ahead log with `fsync = on`; SQLite's WAL at each checkpoint), so its
tail is a floor under the tail of every API call that writes. The probe does
what a commit does: append 8 KiB to a file and `fdatasync` it, N times a
second for S seconds, and prints the latency distribution.

    benches/disk_flush.py [DIR] [SECONDS] [PER_SECOND]   (defaults: /tmp 10 100)
"""

import os
import sys
import tempfile
import time


def main() -> None:
    where = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    block = os.urandom(8192)
    took = []
    fd, path = tempfile.mkstemp(prefix="jit-flush-", dir=where)
    try:
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            start = time.monotonic()
            os.write(fd, block)
            os.fdatasync(fd)
            took.append((time.monotonic() - start) * 1000.0)
            next_at += 1.0 / rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()

    def pct(p: float) -> float:
        return took[min(len(took) - 1, int(p / 100.0 * len(took)))]

    print(
        f"{where}: {len(took)} flushes of 8 KiB in {seconds:.0f} s; ms p50 {pct(50):.2f}, "
        f"p99 {pct(99):.2f}, p99.9 {pct(99.9):.2f}, max {took[-1]:.2f}; "
        f"over 10 ms: {sum(t > 10 for t in took)}"
    )


if __name__ == "__main__":
    main()
