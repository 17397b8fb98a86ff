"""Stop signals: SIGTERM/SIGINT ask the loop to save at the next step boundary and exit."""

from __future__ import annotations

import signal
from typing import Any

import torch

from mbsnet import distrib


class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves at the next step boundary and exits."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, the default behaviour stays
                return

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # a second signal: the user insists, stop right now
            self.restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """True on every rank when any rank got a signal (ranks must stop at the same step)."""
        local = self.signal_name is not None
        if distrib.world_size() == 1:
            return local
        on_gpu = torch.distributed.get_backend() == "nccl"
        flag = torch.tensor([float(local)], device="cuda" if on_gpu else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
