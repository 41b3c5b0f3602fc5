"""What every benchmark does with its result: name the command that made it, write the Markdown
lines to a file and print them."""
from __future__ import annotations

from pathlib import Path


def write_report(path: str | Path, lines: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def command_line(parser, args, script: str) -> str:
    """`python SCRIPT` plus the options that differ from their defaults (--out left out)."""
    options = "".join(f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
                      if k != "out" and v != parser.get_default(k))
    return f"python {script}{options}"
