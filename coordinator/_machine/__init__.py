"""The saga state machine (a functional core): see :mod:`.transition` for its rules.

``transition(registry, state, message, now=...) -> Transition``: one inbox message gives
one new state and the step requests and lifecycle events to send; no I/O, no clock.
"""

from coordinator._machine.run import Definitions, Transition
from coordinator._machine.transition import transition

__all__ = ["Definitions", "Transition", "transition"]
