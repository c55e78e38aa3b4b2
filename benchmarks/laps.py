"""Wall time per phase of a benchmark, printed as each phase ends and summed at the end."""

from __future__ import annotations

import time


class Laps:
    """`laps("name")` ends a phase and prints its seconds; `summary()` prints them all."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.start = self.clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name], self.clock = now - self.clock, now
        print(f"  [{name}: {self.phases[name]:.0f} s]", flush=True)

    def summary(self, out: object) -> None:
        total = time.perf_counter() - self.start
        print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items()))
        print(f"total {total:.0f} s ({total / 60:.1f} min); results in {out}")
