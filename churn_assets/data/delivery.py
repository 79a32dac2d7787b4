"""Checks a delivery must pass before it replaces the loaded raw tables.

The contract (:mod:`churn_assets.data.contract`) judges a delivery on its own; these judge it
against what is loaded now. A refusal raises before anything is written, so the raw tables,
the periods and everything built from them stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from churn_assets.policy import Policy, env_name


class DeliveryRefused(ValueError):
    """A delivery that must not replace the loaded data; nothing was loaded."""


@dataclass(frozen=True)
class CustomerCountChange:
    """A delivery's customers against the previous load's (``previous`` None: first load)."""

    previous: int | None
    delivered: int
    warn_share: float

    @property
    def drop_share(self) -> float:
        """Share of the previous load's customers missing from this delivery (0 if it grew)."""
        if not self.previous:
            return 0.0
        return max(0.0, (self.previous - self.delivered) / self.previous)

    @property
    def warns(self) -> bool:
        return self.drop_share > self.warn_share

    def describe(self) -> str:
        if self.previous is None:
            return f"{self.delivered:,} customers (first load: nothing to compare with)"
        return (
            f"{self.delivered:,} customers against {self.previous:,} in the previous load "
            f"(a drop of {self.drop_share:.1%}; warns above {self.warn_share:.0%}, "
            f"{env_name('warn_customer_drop')})"
        )


def check_customer_count(
    previous: int | None, delivered: int, policy: Policy
) -> CustomerCountChange:
    """The change in customers, or :class:`DeliveryRefused` when more than the policy's
    share disappeared: customer files list churned customers too, so a large drop is a
    cut-off or filtered export, and training on it would relabel the missing as unknown."""
    change = CustomerCountChange(previous, delivered, policy.warn_customer_drop)
    if change.drop_share > policy.max_customer_drop:
        raise DeliveryRefused(
            f"the delivery has {delivered:,} customers, {change.drop_share:.1%} fewer than the "
            f"{previous:,} of the previous load (more than {policy.max_customer_drop:.0%}, "
            f"{env_name('max_customer_drop')}); nothing was loaded. If the drop is real, "
            f"set {env_name('max_customer_drop')} above {change.drop_share:.2f} for this load"
        )
    return change
