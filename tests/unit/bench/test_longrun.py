"""The long-run report: its RESULTS.md block, and what it reads from a worker's log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bench.longrun import BEGIN, END, changelog_replayed, render, restart_phases, write_section

LOG = """\
[2026-11-21 20:09:09,922] [1] [INFO] [^Worker]: Starting...
[2026-11-21 20:09:14,309] [1] [INFO] Joined group 'x' (generation 3) with member_id m
[2026-11-21 20:09:15,306] [1] [INFO] [^---Recovery]: Highwater for active changelog partitions:
+Highwater - Active----------+-----------+-----------+
| topic                      | partition | highwater |
+----------------------------+-----------+-----------+
| x-saga-state-changelog     | 0         | 412       |
| 〃                         | 1         | 99        |
| 〃                         | 2         | -1        |
+----------------------------+-----------+-----------+
[2026-11-21 20:09:15,317] [1] [INFO] [^---Recovery]: active offsets at start of reading:
+Reading Starts At - Active--+-----------+--------+
| topic                      | partition | offset |
+----------------------------+-----------+--------+
| x-saga-state-changelog     | 0         | 400    |
| 〃                         | 1         | -1     |
| 〃                         | 2         | -1     |
+----------------------------+-----------+--------+
[2026-11-21 20:09:15,327] [1] [INFO] [^---Recovery]: Recovery complete
[2026-11-21 20:09:16,207] [1] [INFO] deadline index rebuilt: 3300 sagas in partitions [0, 1]
"""


def test_changelog_records_replayed_are_read_from_faust_s_recovery_tables() -> None:
    # partition 0 from its stored offset 400 to 412; partition 1 from the start; 2 is empty
    assert changelog_replayed(LOG) == 12 + 100 + 0
    assert changelog_replayed("no recovery here") is None


def test_restart_phases_are_seconds_from_the_process_start() -> None:
    started = datetime(2026, 11, 21, 20, 9, 5).astimezone().timestamp()
    assert restart_phases(LOG, started) == {
        "python_start_s": 4.92,
        "group_joined_s": 9.31,
        "table_restored_s": 10.33,
        "index_rebuilt_s": 11.21,
    }


def results() -> dict[str, object]:
    sample = [{"sagas": n, "rss_mib": 100.0 + n / 1000, "elapsed_s": n / 100} for n in (1, 2, 3)]
    return {
        "date": "2026-11-21 21:00 UTC",
        "commit": "abc1234",
        "machine": "2 cores",
        "every": 1,
        "rss": [
            {"retention": "off", "sagas": 3, "elapsed_s": 9.0, "rate_per_s": 0.3,
             "samples": sample, "last_over_second": 1.0},
        ],
        "restore": [
            {"store": "rocksdb://", "retained": 10, "inflight": 2, "rss_after_restore_mib": 90.0,
             "disk_mib": 1.5, "indexed": 12, "changelog_records_replayed": 0,
             "python_start_s": 4.9, "group_joined_s": 9.3, "table_restored_s": 10.3,
             "index_rebuilt_s": 11.2, "probe_completed_s": 12.0},
        ],
        "notes": ["a note"],
    }  # fmt: skip


def test_the_results_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Benchmark results\n\nengine tables\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    write_section(md, render(results()))
    text = md.read_text()
    assert text.startswith("# Benchmark results\n\nengine tables\n\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "old figures" not in text
    assert text.rstrip().endswith("after")
    assert "| rocksdb:// | 10 | 2 |" in text and "| 2 | 100.0 |" in text


def test_the_results_section_is_appended_when_absent(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nengine tables\n")
    write_section(md, render(results()))
    text = md.read_text()
    assert text.startswith("# Benchmark results\n\nengine tables\n\n" + BEGIN)
    assert text.rstrip().endswith(END)
