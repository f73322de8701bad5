"""The invariants of a chaos run, judged from what the participants, the lifecycle topic,
the listener database and every coordinator worker say after the run.

The oracle is the participants' effects (the example services' ``/admin/orders/{id}``):

* every saga reaches the status its injected failure explains;
* no effect is applied twice (one order holds at most one reservation, charge, shipment,
  notification; no idempotency key applied twice);
* every applied do belongs to a completed saga or was undone (and a completed saga holds
  every effect), and compensations ran in reverse order over exactly the right steps;
* lifecycle ``seq`` runs 1..n without two different events under one ``seq``, with
  exactly one terminal event;
* the listener's row agrees with the coordinator (status and last ``seq``);
* ``status`` answers for every saga from every worker, with the same status.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from coordinator.events import LifecycleEvent
from tests.chaos.workload import Planned

#: lifecycle event type that ends each resting coordinator status
RESTING_EVENT = {
    "completed": "saga_completed",
    "compensated": "saga_compensated",
    "cancelled": "saga_cancelled",
    "compensation_failed": "saga_compensation_failed",
    "parked": "saga_parked",
}
EVENT_STATUS = {event: status for status, event in RESTING_EVENT.items()}
TERMINAL_EVENTS = frozenset({"saga_completed", "saga_compensated", "saga_cancelled"})
#: the order listener's status for each resting coordinator status
LISTENER_STATUS = {
    "completed": "completed",
    "compensated": "cancelled",
    "cancelled": "cancelled",
    "compensation_failed": "compensation_failed",
}


class Problems(list[str]):
    """Descriptions of broken invariants, and the distinct sagas (or records) they concern:
    the table counts sagas, not descriptions."""

    def __init__(self) -> None:
        super().__init__()
        self.subjects: set[str] = set()

    def add(self, subject: str, text: str) -> None:
        self.append(text)
        self.subjects.add(subject)

    def merge(self, other: Problems) -> None:
        self.extend(other)
        self.subjects |= other.subjects


@dataclass
class Fault:
    """One injected fault: when, and which sagas were submitted before it."""

    label: str
    at: float
    before: list[str]
    recovered_in: float | None = None
    #: measured by the scenario itself (e.g. the listener catching up), not from sagas
    measured: bool = False


@dataclass
class Verdict:
    """Counts (and first examples) of every invariant broken in one scenario."""

    scenario: str
    submitted: int = 0
    finished: int = 0
    lost: Problems = field(default_factory=Problems)
    wrong_status: Problems = field(default_factory=Problems)
    double_effects: Problems = field(default_factory=Problems)
    wrong_compensations: Problems = field(default_factory=Problems)
    seq_problems: Problems = field(default_factory=Problems)
    listener_mismatches: Problems = field(default_factory=Problems)
    status_failures: Problems = field(default_factory=Problems)
    other: Problems = field(default_factory=Problems)
    faults: list[Fault] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # where the process logs were kept
    #: lifecycle of every saga with a finding, for the detail file
    timelines: dict[str, list[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)  # for the table's duration

    CHECKS = (
        "lost",
        "wrong_status",
        "double_effects",
        "wrong_compensations",
        "seq_problems",
        "listener_mismatches",
        "status_failures",
        "other",
    )

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.CHECKS)

    def explain(self, limit: int = 8) -> str:
        lines = [f"chaos scenario {self.scenario!r} broke invariants:"]
        for name in self.CHECKS:
            found: Problems = getattr(self, name)
            if found:
                lines.append(f"  {name}: {len(found.subjects)} ({len(found)} findings)")
                lines.extend(f"    - {item}" for item in found[:limit])
        lines.extend(f"  process logs: {where}" for where in self.logs)
        return "\n".join(lines)

    def troubled(self, *, besides: tuple[str, ...] = ()) -> set[str]:
        """Every saga (or record) a check other than ``besides`` found wrong."""
        names = [name for name in self.CHECKS if name not in besides]
        return set().union(*(getattr(self, name).subjects for name in names))


def unique_by_seq(events: list[LifecycleEvent]) -> tuple[list[LifecycleEvent], list[str]]:
    """Events by ``seq`` (re-sent duplicates dropped) and the conflicts: two different
    events under one ``seq`` (an inline chain or transition recomputed after a crash)."""
    by_seq: dict[int, list[LifecycleEvent]] = defaultdict(list)
    for event in events:
        by_seq[event.seq].append(event)
    conflicts = []
    for seq, group in sorted(by_seq.items()):
        shapes = {(e.type, e.step, getattr(e, "attempt", None)) for e in group}
        if len(shapes) > 1:
            conflicts.append(f"seq {seq} carries {sorted(shapes, key=str)}")
    return [by_seq[s][0] for s in sorted(by_seq)], conflicts


def timeline(events: list[LifecycleEvent]) -> list[str]:
    """One line per event (by seq): what a bug report needs."""
    lines = []
    for e in unique_by_seq(events)[0]:
        attempt = getattr(e, "attempt", None)
        error = f" {e.error.type}: {e.error.message[:80]}" if e.error else ""
        where = f" {e.step}#{attempt}" if e.step else ""
        lines.append(f"{e.seq:>3} {e.occurred_at:%H:%M:%S.%f} {e.type}{where}{error}")
    return lines


def resting_status(events: list[LifecycleEvent]) -> str | None:
    """The resting status the lifecycle shows (last event by seq), or None while running.

    A ``step_late_success`` after the saga came to rest is a record, not a move: the
    status is that of the last event before it.
    """
    moves = [e for e in events if e.type != "step_late_success"]
    if not moves:
        return None
    return EVENT_STATUS.get(moves[-1].type)


def judge_lifecycle(
    verdict: Verdict, planned: Planned, raw_events: list[LifecycleEvent]
) -> str | None:
    """Lifecycle invariants of one saga; returns the status it shows (None: not finished)."""
    saga_id = planned.saga_id
    events, conflicts = unique_by_seq(raw_events)
    for conflict in conflicts:
        verdict.seq_problems.add(saga_id, f"{saga_id}: {conflict}")
    seqs = [e.seq for e in events]
    if seqs and seqs != list(range(1, len(seqs) + 1)):
        verdict.seq_problems.add(saga_id, f"{saga_id}: seq not 1..n: {seqs[:20]}")
    terminals = [e.type for e in events if e.type in TERMINAL_EVENTS]
    if len(terminals) > 1:
        verdict.seq_problems.add(saga_id, f"{saga_id}: several terminal events {terminals}")
    status = resting_status(events)
    if status is None:
        last = events[-1].type if events else "no event at all"
        verdict.lost.add(saga_id, f"{saga_id} ({planned.kind.name}): last event {last}")
        return None
    verdict.finished += 1
    kind = planned.kind
    if outage_cost_attempts(kind.outage_step, events):
        kind = kind.after_outage()
    if status not in (kind.status, kind.or_status):
        verdict.wrong_status.add(
            saga_id, f"{saga_id} ({planned.kind.name}): {status}, expected {planned.kind.status}"
        )
    compensated = tuple(e.step for e in events if e.type == "compensation_succeeded")
    if status != "completed" and compensated not in kind.compensation_orders():
        verdict.wrong_compensations.add(
            saga_id,
            f"{saga_id} ({planned.kind.name}): compensated {list(compensated)}, "
            f"expected {list(kind.compensations)}",
        )
    return status


#: how an attempt fails when a fault, not the participant, kept it from answering
#: (``NotSent``: its deadline passed while it waited for a slot in a worker, e.g. while
#: the broker was down and results could not leave)
OUTAGE_ERRORS = frozenset({"StepTimeout", "Expired", "NotSent"})


def outage_cost_attempts(step: str | None, events: list[LifecycleEvent]) -> bool:
    """Whether an attempt of ``step`` expired unrun or timed out (a fault cost it)."""
    return step is not None and any(
        e.type == "step_failed" and e.step == step and e.error and e.error.type in OUTAGE_ERRORS
        for e in events
    )


def judge_effects(
    verdict: Verdict, planned: Planned, status: str | None, view: dict[str, Any]
) -> None:
    """Participants' effects of one saga against the status it ended in."""
    who = f"{planned.saga_id} ({planned.kind.name}, {status})"
    order = view.get("order")
    reservations, charges = view["reservations"], view["charges"]
    shipments, notifications = view["shipments"], view["notifications"]
    for name, items in (
        ("reservations", reservations),
        ("charges", charges),
        ("shipments", shipments),
        ("notifications", notifications),
    ):
        if len(items) > 1:
            verdict.double_effects.add(planned.saga_id, f"{who}: {len(items)} {name}")
    if status is None:
        return  # lost: reported already; its effects prove nothing either way
    standing = []
    if status == "completed":
        missing = [
            what
            for what, present in (
                ("order", order is not None and order["status"] == "created"),
                ("reservation", any(r["status"] == "reserved" for r in reservations)),
                ("charge", any(c["status"] == "charged" for c in charges)),
                ("shipment", any(s["status"] == "created" for s in shipments)),
                ("notification", bool(notifications)),
            )
            if not present
        ]
        if missing:
            verdict.wrong_compensations.add(planned.saga_id, f"{who}: completed without {missing}")
        return
    if order is not None and order["status"] != "cancelled":
        standing.append("order")
    standing += ["reservation" for r in reservations if r["status"] != "released"]
    standing += ["charge" for c in charges if c["status"] != "refunded"]
    standing += ["shipment" for s in shipments if s["status"] != "cancelled"]
    standing += ["notification" for _ in notifications]
    if standing and status != "compensation_failed":
        verdict.wrong_compensations.add(planned.saga_id, f"{who}: effects left standing {standing}")


def judge_idempotency(verdict: Verdict, stats: dict[str, Any]) -> None:
    """No idempotency key of any service applied twice."""
    for name, service in stats["services"].items():
        if service["max_applications_per_key"] > 1:
            verdict.double_effects.add(
                f"service {name}",
                f"service {name}: a key applied {service['max_applications_per_key']} times",
            )


#: the action of every step of the order saga, as the services' ledgers name it
LEDGER_ACTIONS = {
    "create_order": "create",
    "reserve_inventory": "reserve",
    "charge_payment": "charge",
    "ship": "ship",
    "notify": "notify",
}


def ledgers(stats: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every service's ledger regrouped per saga: ``{saga_id: {"charge:<key>": state}}``.

    An action key is ``{saga_id}:{step}:do``; the ledger names it ``{operation}:{key}``."""
    per_saga: dict[str, dict[str, str]] = defaultdict(dict)
    for service in stats["services"].values():
        for entry, state in service.get("ledger", {}).items():
            _, _, key = entry.partition(":")
            saga_id = key.rsplit(":", 2)[0]
            per_saga[saga_id][entry] = state
    return per_saga


def judge_ledger(
    verdict: Verdict, planned: Planned, status: str | None, ledger: dict[str, str]
) -> None:
    """By idempotency key: an ``applied`` do belongs to a completed saga (which applied
    every step's), otherwise it was undone (``undone``) or refused (``tombstone``)."""
    if status is None or status in ("compensation_failed", "parked"):
        return  # still open: an operator acts on it
    who = f"{planned.saga_id} ({planned.kind.name}, {status})"
    applied = sorted(entry for entry, state in ledger.items() if state == "applied")
    if status == "completed":
        wanted = {f"{op}:{planned.saga_id}:{step}:do" for step, op in LEDGER_ACTIONS.items()}
        if set(applied) != wanted:
            verdict.wrong_compensations.add(
                planned.saga_id, f"{who}: ledger applied {applied}, expected every step's do"
            )
    elif applied:
        verdict.wrong_compensations.add(
            planned.saga_id, f"{who}: ledger keeps applied and never undone {applied}"
        )


def judge_listener(
    verdict: Verdict, planned: Planned, status: str | None, seq: int, row: tuple[str, int] | None
) -> None:
    """The listener's ``orders`` row agrees with the coordinator's record of the saga."""
    if status is None:
        return
    if row is None:
        verdict.listener_mismatches.add(planned.saga_id, f"{planned.saga_id}: no listener row")
        return
    want = LISTENER_STATUS.get(status)
    row_status, row_seq = row
    if (want is not None and row_status != want) or row_seq != seq:
        verdict.listener_mismatches.add(
            planned.saga_id,
            f"{planned.saga_id}: listener ({row_status}, seq {row_seq}) vs coordinator "
            f"({status}, seq {seq})",
        )


def judge_recovery(verdict: Verdict, terminal_seen: dict[str, float]) -> None:
    """Recovery time of each fault: until every saga submitted before it had finished."""
    for fault in verdict.faults:
        if fault.measured:
            continue
        times = [terminal_seen.get(saga_id) for saga_id in fault.before]
        if any(t is None for t in times):
            fault.recovered_in = None
        else:
            fault.recovered_in = max([0.0, *(t - fault.at for t in times if t is not None)])
