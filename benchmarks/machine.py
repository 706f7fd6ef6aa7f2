"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import platform


def describe_machine() -> str:
    """CPU model and logical CPU count (from /proc/cpuinfo where there is one), OS and kernel."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = f"{names[0]} ({len(names)} logical CPUs)" if names else cpu
    except OSError:
        pass
    return f"{cpu}, {platform.system()} {platform.release()}"
