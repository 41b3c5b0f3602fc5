"""What every benchmark shares: naming the device and the command, timing on a GPU, running CLI
steps and reading their training time and memory, and writing the Markdown lines to a file (and printing them)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock timer measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(steps per second, peak GPU memory in GiB; NaN on a CPU) of `step` run warmup + steps times,
    timing the last `steps`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        step()
    sync(device)
    rate = steps / (time.perf_counter() - start)
    return rate, torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def compile_in_place(models, mode: str) -> None:
    """torch.compile each model's forward in place (nn.Module.compile, as gdistill's --compile does);
    mode: default, reduce-overhead (CUDA graphs), max-autotune."""
    for model in models:
        model.compile(mode=None if mode == "default" else mode)


def device_name(device: torch.device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def fmt(value, digits: int = 2) -> str:
    """A table cell: the value to `digits` decimals, or n/a where there is none."""
    return "n/a" if value is None else f"{value:.{digits}f}"


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


def run(cmd: list[str]) -> None:
    """One CLI step, echoed; a failure stops the benchmark."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def training_seconds(run_dir: Path) -> float:
    """A run's training time, from its log.jsonl (so reused runs report it too). A resumed run's log
    goes back to its checkpoint's step: the wall time between the interruption and the resume is
    left out, and the first record after it counts one logging interval at its own rate."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    records = [r for r in records if "steps_per_s" in r]
    first = records[0]
    seconds = first["step"] / first["steps_per_s"]
    interval = records[1]["step"] - first["step"] if len(records) > 1 else first["step"]
    for before, record in zip(records, records[1:]):
        resumed = record["step"] <= before["step"]
        seconds += interval / record["steps_per_s"] if resumed else record["time"] - before["time"]
    return seconds


def training_peak_memory_gib(run_dir: Path) -> float | None:
    """A run's peak memory in GiB, the largest its log.jsonl records (on a GPU torch's peak allocated
    memory, on a CPU the process's peak resident set); None for a log from before gdistill recorded it."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    values = [r["peak_memory_gib"] for r in records if "peak_memory_gib" in r]
    return max(values) if values else None
