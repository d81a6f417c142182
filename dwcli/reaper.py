"""The guard of ``--ray local``: nothing of the cluster outlives the dw that started it.

Ray's own fate-sharing kills its head processes (GCS, raylet) when the driver dies, and
the workers follow the raylet; but its two agents notice the raylet's death, then wait 60 s
for a GCS that is gone before they exit (measured with Ray 2.60 after ``kill -9`` of the
driver).  So dw starts this small process beside the cluster: it notes, every second, the
processes descended from dw, and once dw is gone (its end of a pipe closes, however it
died) it kills those still running.

Run as ``python -m dwcli.reaper PID`` with a pipe from PID on standard input.  Linux only
(it reads /proc); elsewhere it only waits.  Standard library only: it starts fast and holds
a few MB.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_LOOK_EVERY_S = 1.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            fields = stream.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])  # ppid, starttime (fields 4 and 22 of proc(5))


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root``, with its start time (a pid reused later is not it)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(name))
                starts[int(name)] = stat[1]
    found, queue = {}, [root]
    while queue:
        for child in parents.get(queue.pop(), ()):
            if child not in found and child != os.getpid():
                found[child] = starts[child]
                queue.append(child)
    return found


def main() -> None:
    driver = int(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    gone = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), gone.set()), daemon=True).start()
    if not os.path.isdir("/proc"):
        gone.wait()
        return
    seen: dict[int, int] = {}
    while not gone.wait(_LOOK_EVERY_S):
        seen.update(descendants(driver))
    for pid, started in seen.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
