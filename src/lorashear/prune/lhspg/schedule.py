"""When LHSPG does what: T_w warm-up steps, then P periods of T_p steps (the remainder trains on)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lorashear.errors import LorashearError


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    warmup_steps: int
    period_steps: int
    periods: int

    @classmethod
    def plan(cls, total_steps: int, warmup_share: float, periods: int) -> Schedule:
        warmup = int(round(warmup_share * total_steps))
        period = (total_steps - warmup) // periods
        if period < 1:
            raise LorashearError(
                f"LHSPG needs at least one step per period: {total_steps} steps with {warmup} of warm-up "
                f"leave {total_steps - warmup} for {periods} periods; train on more tokens or use fewer --periods"
            )
        return cls(total_steps, warmup, period, periods)

    def position(self, step: int) -> tuple[int, int] | None:
        """(period, step within it) of the 0-based optimiser step `step`; None in warm-up or after the last period."""
        k = step - self.warmup_steps
        if k < 0 or k >= self.periods * self.period_steps:
            return None
        return divmod(k, self.period_steps)

    def period_of(self, step: int) -> int:
        """Periods begun by the 0-based step `step` (0 in warm-up, P after the last)."""
        k = step - self.warmup_steps
        return 0 if k < 0 else min(self.periods, k // self.period_steps + 1)

    def selection_steps(self) -> list[int]:
        """The 0-based step after which each period's groups are chosen: period 0's first step, then each
        previous period's last step (two periods of one step share a step)."""
        return [self.warmup_steps] + [self.warmup_steps + p * self.period_steps - 1 for p in range(1, self.periods)]

    def to_dict(self) -> dict:
        return asdict(self)
