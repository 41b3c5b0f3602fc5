"""What every benchmark does with its result: write the Markdown lines to a file and print them."""
from __future__ import annotations

from pathlib import Path


def write_report(path: str | Path, lines: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
