"""Progress lines for the long steps of the demo, the benchmarks and the tests: each line
starts with the time since the start, and a phase ends with a line giving its own duration.

    progress = Progress()
    with progress.phase("load 10000 rows"):
        ...
    progress.say("something worth a line")

prints

    [    0.0 s] load 10000 rows ...
    [    3.2 s] load 10000 rows: 3.2 s
    [    3.2 s] something worth a line
"""

import contextlib
import time
from collections.abc import Callable, Iterator


class Progress:
    def __init__(self, emit: Callable[[str], None] | None = None):
        self.emit = emit or (lambda line: print(line, flush=True))
        self.started = time.perf_counter()

    def restart(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        self.emit(f"[{self.elapsed():7.1f} s] {message}")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A line when the phase starts and one with its duration when it ends."""
        self.say(f"{name} ...")
        t0 = time.perf_counter()
        yield
        self.say(f"{name}: {time.perf_counter() - t0:.1f} s")
