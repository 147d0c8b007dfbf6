"""The recorder's process, kept running by gunicorn's master beside the workers: started
when the master is ready, restarted (after a pause) if it dies, stopped with the master.
Imports nothing that imports prometheus-client (the master's rule, gunicorn_conf)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

RESTART_PAUSE_SECONDS = 2.0
STOP_SECONDS = 10.0


class RecorderProcess:
    def __init__(self, log: Any, on_exit: Callable[[int], None] | None = None) -> None:
        self.log = log
        self.on_exit = on_exit  # given the dead recorder's pid
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, name="recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _keep_running(self) -> None:
        while not self._stopping.is_set():
            process = subprocess.Popen([sys.executable, "-m", "service.recorder"])
            self.process = process
            # gunicorn's master reaps any child it is told of, so the exit status may be
            # lost (read as 0); that the recorder exited is what matters here.
            code = process.wait()
            if self.on_exit is not None:
                self.on_exit(process.pid)
            if self._stopping.is_set():
                break
            self.log.warning("history recorder exited; restarting", pid=process.pid, code=code)
            self._stopping.wait(RESTART_PAUSE_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(STOP_SECONDS)
