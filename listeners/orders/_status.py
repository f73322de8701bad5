"""Order statuses, and which one an order reaches when a step of its saga succeeds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from listeners._errors import ListenerConfigError
from listeners._rows import utc

__all__ = ["ORDER_STATUSES", "StatusRules", "utc"]

#: Every status an order can have.
ORDER_STATUSES = frozenset(
    {
        "pending",
        "inventory_reserved",
        "paid",
        "shipped",
        "completed",
        "cancelling",
        "cancelled",
        "compensation_failed",
        "parked",
    }
)


@dataclass(frozen=True)
class StatusRules:
    """Which status an order reaches when a step of its saga succeeds.

    Attributes:
        status_by_step: Step name to status, e.g. ``{"charge_payment": "paid"}``. Steps
            not named (and every compensation) leave the status as it is.
    """

    status_by_step: Mapping[str, str]

    def __post_init__(self) -> None:
        unknown = {s: v for s, v in self.status_by_step.items() if v not in ORDER_STATUSES}
        if unknown:
            raise ListenerConfigError(
                f"order status mapping {unknown} names unknown statuses; use one of "
                f"{sorted(ORDER_STATUSES)} (LISTENER_ORDER_STATUS_BY_STEP)"
            )
        object.__setattr__(self, "status_by_step", MappingProxyType(dict(self.status_by_step)))
