"""The live notebook table never shows an older snapshot after a newer one."""

from __future__ import annotations

import threading
import time

from multistore.display.notebook import NotebookDisplay, results_html
from multistore.status import Status, StatusBoard


class SlowHandle:
    """A display handle whose n-th update is slow (a busy kernel's I/O), recording what arrives."""

    def __init__(self, slow_call: int) -> None:
        self.received: list[str] = []
        self._slow_call = slow_call
        self._calls = 0
        self._count_lock = threading.Lock()
        self.slow_started = threading.Event()

    def update(self, obj) -> None:
        with self._count_lock:
            self._calls += 1
            slow = self._calls == self._slow_call
        if slow:
            self.slow_started.set()
            time.sleep(0.4)
        self.received.append(obj.data)


def test_updates_from_parallel_cubes_arrive_in_snapshot_order():
    board = StatusBoard(["a", "b"])
    handle = SlowHandle(slow_call=2)
    shown = NotebookDisplay("run", handle=handle)
    board.subscribe(shown.on_update)
    shown.start(board)  # call 1: the empty table

    older = threading.Thread(
        target=board.update, args=("a",), kwargs={"status": Status.COMPLETED, "message": "A-done"}
    )
    older.start()
    assert handle.slow_started.wait(30)  # the older snapshot is being sent (slowly) ...
    board.update("b", status=Status.FAILED, message="B-failed")  # ... when a newer one is made
    older.join()

    assert len(handle.received) == 3
    # the last table shown is the board's final state (independent rendering of the board)
    assert handle.received[-1] == results_html(board.results(), "run")
    assert "A-done" in handle.received[1] and "B-failed" not in handle.received[1]
