"""The /proc readings the benchmarks rely on to measure and stop a server's whole process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from benchmarks.servers import descendants, running, tree_cpu_seconds

# A parent whose threads start and end all the time (as a threaded HTTP server's do), with a
# child that has a child of its own.
CHURNING_PARENT = """
import subprocess, sys, threading
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
    "'import time; time.sleep(60)']); time.sleep(60)"])
print(child.pid, flush=True)
while True:
    threads = [threading.Thread(target=sum, args=([1] * 1000,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


def test_descendants_are_found_while_the_parents_threads_come_and_go() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHURNING_PARENT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while len(descendants(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the grandchild is starting
        for _ in range(300):
            found = descendants(parent.pid)
            assert found[0] == child and len(found) == 2, found
        assert tree_cpu_seconds(parent.pid) > 0
    finally:
        for pid in descendants(parent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.01)  # a SIGKILLed process may still be on its way out when kill returns
    assert not running(parent.pid) and not running(child)
