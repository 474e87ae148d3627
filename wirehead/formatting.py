"""Rendering: a :class:`~wirehead.monitor.Snapshot` as text, and the formatters every view shares.

:mod:`wirehead.monitor` collects a snapshot from the store; this module only turns numbers into
words.  ``wirehead status`` / ``wirehead watch`` print :func:`snapshot_text`, and the notebook
dashboard (:mod:`wirehead.notebook.dashboard`) writes its durations, rates and sizes with the same
:func:`duration`, :func:`rate` and :func:`size`, so a figure reads the same in a terminal and in a
notebook.  Everything here is pure: no store, no clock (the snapshot's ``taken_at`` is "now").
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional

if TYPE_CHECKING:  # the snapshot's module imports this one; at run time only its attributes are read
    from .monitor import Snapshot

__all__ = ["duration", "rate", "size", "cut", "fill_bar", "json_safe", "snapshot_text", "swap_log_lines"]


def duration(seconds: Optional[float]) -> str:
    """``"12.3 s"``, ``"4.5 min"`` or ``"2.1 h"``; ``"-"`` for ``None`` or a negative value (unknown)."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rate(per_second: float) -> str:
    """Committed samples per second as every view prints them: ``"3.25 samples/s"``."""
    return f"{per_second:.2f} samples/s"


def size(n: float) -> str:
    """Bytes in binary units: ``"512 B"``, ``"1.5 KiB"``, ``"3.0 MiB"``, ``"1.2 GiB"``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cut(s: Any, n: int) -> str:
    """``str(s)``, shortened to ``n`` characters with a trailing ``…`` when longer."""
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def fill_bar(fraction: float, width: int = 40) -> str:
    """``[#########.......]`` for a fraction in [0, 1] (NaN shows empty, values outside are clipped)."""
    fraction = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, fraction))
    full = int(round(fraction * width))
    return "[" + "#" * full + "." * (width - full) + "]"


def json_safe(value: Any) -> Any:
    """``value`` with string keys, lists for tuples, ``None`` for non-finite floats and ``str`` for anything else."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def swap_log_lines(entries: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One JSON object per swap log entry (JSON Lines, for ``jq``)."""
    for e in entries:
        yield json.dumps(json_safe(dict(e)), sort_keys=True)


def snapshot_text(snap: "Snapshot", width: int = 40) -> str:
    """A readable table of ``snap``: what ``wirehead status`` prints and ``wirehead watch`` refreshes.

    ``width``: characters of the write generation's fill bar.
    """
    now = snap.taken_at
    out: list[str] = []
    out.append(f"wirehead cache {snap.dbname!r} at {snap.uri}  ({time.strftime('%H:%M:%S', time.localtime(now))})")
    if not snap.initialised:
        out.append("  not initialised yet: no generator, manager or dataset has used this cache")
    out.append(f"  write generation  {snap.write_gen:<6d} {fill_bar(snap.fill_fraction, width)} "
               f"{snap.write_fill}/{snap.swap_cap} ({100 * snap.fill_fraction:.0f}%)"
               + (f", next holds {snap.next_fill}" if snap.next_fill else ""))
    if snap.read_gen is None:
        out.append("  read generation   none yet (waiting for the first swap)")
    else:
        out.append(f"  read generation   {snap.read_gen:<6d} {snap.read_gen_size} samples, "
                   f"age {duration(snap.read_gen_age)}, read {snap.read_gen_reads} times "
                   f"({snap.reads_per_sample:.1f} per sample)"
                   + (f", readers waited {snap.reuse_wait_seconds:.1f} s" if snap.reuse_wait_seconds else ""))
    swaps = f"  swaps             {snap.swaps:<6d}"
    if snap.last_swap_at is not None:
        swaps += f" last {duration(max(0.0, now - snap.last_swap_at))} ago"
    if snap.swap_intervals:
        mean = sum(snap.swap_intervals) / len(snap.swap_intervals)
        swaps += f", every {mean:.1f} s (mean of last {len(snap.swap_intervals)})"
    out.append(swaps)
    out.append(f"  committed rate    {rate(snap.samples_per_second)}")
    gb = "  ".join(f"gen {g}: {size(b)}" for g, b in sorted(snap.generation_bytes.items())) or "-"
    out.append(f"  stored            {gb}")
    out.append(f"  orphans           {snap.orphan_samples} samples awaiting clean-up")
    lease = (f"{snap.lease_holder} (expires in {snap.lease_expires_in:.1f} s)" if snap.lease_holder
             else "free (no swapper holds it)")
    out.append(f"  swap lease        {lease}")
    for title, workers in (("generators", snap.generators), ("managers", snap.managers)):
        alive = sum(1 for w in workers if w.status == "alive")
        out.append(f"  {title:<17} {len(workers)} seen, {alive} alive")
        shown = sorted(workers, key=lambda w: (w.status != "alive", -(w.started or 0.0)))[:12]
        if shown:
            what = "PRODUCED" if title == "generators" else "SWAPS"
            out.append(f"    {'NAME':<28} {'HOST':<16} {'PID':>7} {'STATUS':<8} {what:>9} {'BEAT':>8}")
            for w in shown:
                out.append(f"    {cut(w.name, 28):<28} {cut(w.host or '-', 16):<16} {w.pid or '-':>7} "
                           f"{w.status:<8} {w.produced:>9d} {duration(w.seconds_since_beat):>8}")
        if len(workers) > len(shown):
            out.append(f"    ... and {len(workers) - len(shown)} more")
    if snap.errors:
        out.append(f"  errors ({len(snap.errors)})")
        for e in snap.errors[-10:]:
            out.append(f"    {cut(e, 160)}")
    return "\n".join(out)
