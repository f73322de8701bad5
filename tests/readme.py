"""Code blocks of the README, so tests run exactly what the README shows."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_block(heading: str, index: int = 0) -> str:
    """The ``index``-th fenced Python block after ``heading`` (within that section)."""
    text = README.read_text()
    section = text[text.index(heading) + len(heading) :]
    following = section.find("\n#")
    blocks = section[: following if following >= 0 else None].split("```python\n")[1:]
    return blocks[index].split("```\n")[0]
