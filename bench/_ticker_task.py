"""The task the SSE benchmark tails; the gateway runs it with the local runner.

    python _ticker_task.py GO_FILE RATE SECONDS MAX_WAIT

Prints ``ready``, then waits (at most MAX_WAIT seconds) until GO_FILE exists,
so that every client is connected before output flows. Then it prints RATE
lines a second for SECONDS seconds, each flushed at once and carrying
``time.time()`` read just before the print:

    @@<seq>@<unix time, 6 decimals>@@ <padding>

The schedule is absolute (line i at start + i/RATE), so a late wake-up does
not lower the rate. Exits 0 when done, 3 if GO_FILE never appeared.
"""

from __future__ import annotations

import os
import sys
import time

PAD = "x" * 40  # a line of about 70 bytes, like a short log line


def main() -> int:
    go, rate, seconds, max_wait = (
        sys.argv[1],
        float(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    print("ready", flush=True)
    deadline = time.monotonic() + max_wait
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    total = int(rate * seconds)
    start = time.monotonic()
    out = sys.stdout
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(f"@@{i}@{time.time():.6f}@@ {PAD}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
