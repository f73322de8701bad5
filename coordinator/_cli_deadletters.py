"""``python -m coordinator dead-letters``: list recent dead letters, or re-submit one."""

from __future__ import annotations

import argparse
import json

from coordinator._deadletters import DeadLetterEntry, DeadLetterLog
from coordinator._settings import CoordinatorSettings

__all__ = ["dead_letters", "format_entry"]


def format_entry(entry: DeadLetterEntry) -> str:
    """One line: position, time, where it came from, its saga, and the reason."""
    letter = entry.letter
    reason = " ".join(letter.reason.split())
    if len(reason) > 400:
        reason = reason[:399] + "…"
    if letter.truncated:
        kept = len(letter.value())
        reason += f" [value truncated: first {kept} of {letter.original_size} bytes kept]"
    return (
        f"{entry.ref:<8} {letter.occurred_at:%Y-%m-%d %H:%M:%S} {letter.agent:<10} "
        f"{letter.source_topic}  saga {letter.key or '-'}  {letter.error_type}: {reason}"
    )


async def dead_letters(settings: CoordinatorSettings, args: argparse.Namespace) -> int:
    """List (or, with ``--resubmit``, re-send) dead letters; returns the exit code."""
    log = DeadLetterLog(settings)
    if args.resubmit:
        entry = await log.resubmit(args.resubmit)
        letter = entry.letter
        print(
            f"re-submitted dead letter {entry.ref} to {letter.source_topic} "
            f"(key {letter.key or '-'}); it failed with {letter.error_type}: "
            f"{' '.join(letter.reason.split())[:200]}"
        )
        return 0
    entries = await log.recent(saga_id=args.saga_id, limit=args.limit)
    for entry in entries:
        if args.json:
            print(
                json.dumps(
                    {"ref": entry.ref, **entry.letter.model_dump(mode="json")},
                    separators=(",", ":"),
                )
            )
        else:
            print(format_entry(entry))
    if not entries and not args.json:
        where = f" for saga {args.saga_id}" if args.saga_id else ""
        print(f"no dead letters{where} on {log.topic}")
    return 0
