"""The ledger every chaos test keeps and prints: sent, acknowledged, stored, duplicates, lost.

    ledger = Ledger("broker down 60 s, 100 agents")
    ledger.sent = ...            # messages the devices produced (their outbox sequence numbers)
    ledger.acknowledged = ...    # those the broker acknowledged (PUBACK) to the devices
    ledger.stored = ...          # distinct messages in the server's database
    ledger.duplicates = ...      # rows beyond one per (device, seq), or double-counted effects
    ledger.check()               # prints one line, then asserts lost == 0 and duplicates == 0

``lost`` is what was *acknowledged* (to the device by the broker, or by the device's outbox as
handed over) but is not stored: the only loss the system promises never to have. Messages the
test decided may be dropped (telemetry over an outbox cap, oldest first) are counted in
``dropped_by_design`` and must be explained by the test, never folded into ``lost``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Ledger"]


@dataclass
class Ledger:
    scenario: str
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    duplicates: int = 0
    dropped_by_design: int = 0
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return max(0, self.acknowledged - self.dropped_by_design - self.stored)

    def line(self) -> str:
        extra = "".join(f", {key} {value}" for key, value in self.notes.items())
        return (
            f"chaos[{self.scenario}]: sent {self.sent}, acknowledged {self.acknowledged}, stored {self.stored}, "
            f"duplicates {self.duplicates}, lost {self.lost}, dropped by design {self.dropped_by_design}{extra}"
        )

    def check(self) -> None:
        print(f"\n{self.line()}")
        assert self.sent > 0, "the scenario sent nothing: it proves nothing"
        assert self.acknowledged <= self.sent, self.line()
        assert self.duplicates == 0, self.line()
        assert self.lost == 0, self.line()
