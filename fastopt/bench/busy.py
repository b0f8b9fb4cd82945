"""Load from elsewhere, on purpose: ``--busy N`` keeps N cores busy while the benchmark runs.

Each busy process is a child Python spinning in ``while True: pass``.  It
stops when it is killed, and on its own when its stdin pipe closes, which
happens when this process exits by any means, even one that runs no cleanup.
"""

import subprocess
import sys

# A thread blocked on stdin costs nothing; the main thread spins.
BUSY_LOOP = """
import os, sys, threading

def stop_when_the_parent_is_gone():
    sys.stdin.buffer.read()
    os._exit(0)

threading.Thread(target=stop_when_the_parent_is_gone, daemon=True).start()
print("spinning", flush=True)
while True:
    pass
"""

STOP_TIMEOUT_S = 10.0


class BusyProcesses:
    """A context manager that starts ``count`` busy processes and kills them on exit.

    ``with BusyProcesses(2) as busy:`` -- ``busy.pids`` are their process ids.
    They are killed however the block ends: normally, on an exception, on
    KeyboardInterrupt.
    """

    def __init__(self, count):
        if count < 0:
            raise ValueError(f"count must be >= 0; got {count}")
        self.count = count
        self.processes = []

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    def start(self):
        try:
            for _ in range(self.count):
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-c", BUSY_LOOP], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            for process in self.processes:
                # spinning before the first sample is timed
                if process.stdout.readline().strip() != b"spinning":
                    raise RuntimeError(f"a busy process did not start (exit status {process.poll()})")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Kill every busy process and wait for it to be gone."""
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.stdin.close()
            process.stdout.close()
            process.wait(timeout=STOP_TIMEOUT_S)
        self.processes = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
        return False
