"""SwapDashboard: a live ipywidgets view of a cache's :class:`~wirehead.monitor.Snapshot`.

A thin view over the snapshot (as tqdm's notebook bar is over its text model): every number
it shows comes from :func:`wirehead.monitor.snapshot`, the same object ``wirehead status``
prints.  It refreshes itself in the background, as a task of the kernel's one refresher thread
(:mod:`wirehead.notebook.refresher`); :meth:`SwapDashboard.stop`, :meth:`SwapDashboard.close`, the
controller's ``stop()`` and a re-run of its cell end that task.  Without a frontend (a console, nbconvert to HTML)
it shows the snapshot's text, a static HTML summary and the history plot as PNG (drawn once, when
displayed; the live widget's history is an inline SVG sparkline, cheap at every refresh).  Colours
come from JupyterLab's ``--jp-*`` theme variables, so light and dark themes both read well.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
import weakref
from typing import Any, Optional, Union

from ..config import ConfigSource, WireheadConfig
from ..formatting import duration, rate
from ..monitor import snapshot
from . import embed
from .refresher import REFRESHER, adopt
from ._widgets import b64, escape, figure_png, new_figure, require_ipywidgets, require_traitlets

widgets = require_ipywidgets()
traitlets = require_traitlets()

__all__ = ["SwapDashboard", "snapshot_html"]

log = logging.getLogger(__name__)

_STATUS_COLOURS = {"alive": "var(--jp-success-color1, #2e7d32)", "stalled": "var(--jp-warn-color1, #ef6c00)",
                   "dead": "var(--jp-error-color1, #c62828)",
                   "errored": "var(--jp-error-color1, #c62828)", "finished": "var(--jp-ui-font-color2, #555)",
                   "stopped": "var(--jp-ui-font-color2, #555)"}
_FG = "var(--jp-ui-font-color1, #222)"
_CELL = "padding:2px 12px 2px 0;border-bottom:1px solid var(--jp-border-color2, #e0e0e0);white-space:nowrap"
#: The progress bar's style per :attr:`wirehead.monitor.Snapshot.health`.
_BAR_STYLES = {"ok": "info", "idle": "info", "stalled": "warning", "dead": "warning", "errored": "danger",
               "stopped": ""}


def _worker_rows(snap: Any) -> list[tuple[str, str, str, str, int, float]]:
    """``(kind, name, host, status, produced, seconds_since_beat)`` of every worker of ``snap``."""
    return [(w.kind, w.name, f"{w.host}:{w.pid}", w.status, int(w.produced), float(w.seconds_since_beat))
            for w in [*snap.generators, *snap.managers]]


def _error_texts(snap: Any, extra: list[str]) -> list[str]:
    """Recent errors: the snapshot's, each worker's last error (with traceback), the controller's own."""
    out: list[str] = []
    for w in [*snap.generators, *snap.managers] if snap is not None else []:
        if w.last_error:
            out.append(f"{w.kind} {w.name} ({w.host}, pid {w.pid}) [{w.status}]:\n{w.last_error}")
    out.extend(str(e) for e in (snap.errors if snap is not None else []))
    out.extend(extra)
    seen: set[str] = set()
    return [e for e in out if not (e in seen or seen.add(e))]


def _health_table(snap: Any) -> str:
    td = f"<td style='{_CELL}'>"
    tdr = f"<td style='{_CELL};text-align:right'>"
    rows = "".join(
        f"<tr>{td}{escape(kind)}</td>{td}{escape(name)}</td>{td}{escape(where)}</td>"
        f"<td style='{_CELL};color:{_STATUS_COLOURS.get(status, _FG)};font-weight:bold'>{escape(status)}</td>"
        f"{tdr}{produced}</td>{tdr}{beat:.1f} s</td></tr>"
        for kind, name, where, status, produced, beat in _worker_rows(snap))
    if not rows:
        return "<i>no generators or managers have reported yet</i>"
    heads = "".join(f"<th style='{_CELL};text-align:{'right' if h in ('samples', 'last beat') else 'left'}'>{h}</th>"
                    for h in ("kind", "name", "where", "status", "samples", "last beat"))
    return (f"<table style='border-collapse:collapse;margin-top:4px;color:{_FG}'><tr>{heads}</tr>{rows}</table>")


def _errors_html(errors: list[str]) -> str:
    return "".join(f"<pre style='color:var(--jp-error-color1, #c62828);white-space:pre-wrap;font-size:11px;"
                   f"margin:2px 0'>{escape(e)}</pre>"
                   for e in errors[-5:])


def snapshot_html(snap: Any, errors: Optional[list[str]] = None) -> str:
    """A static HTML summary of a snapshot (used by the widget and by its no-frontend fallback)."""
    cap = max(1, int(snap.swap_cap))
    pct = 100.0 * min(1.0, snap.write_fill / cap)
    read = "none yet" if snap.read_gen is None else f"{snap.read_gen} ({snap.read_gen_size} samples)"
    return (
        f"<div style='font-family:var(--jp-ui-font-family, sans-serif);font-size:13px;color:{_FG}'>"
        f"<b>wirehead</b> &middot; database <code>{escape(snap.dbname)}</code> on <code>{escape(snap.uri)}</code><br>"
        f"write generation {snap.write_gen}: {snap.write_fill} / {cap}"
        f"<div style='background:var(--jp-layout-color3, #ddd);width:320px;height:12px'>"
        f"<div style='background:var(--jp-brand-color1, #1976d2);height:12px;"
        f"width:{pct:.1f}%'></div></div>"
        f"swaps {snap.swaps} &middot; {rate(snap.samples_per_second)} &middot; read generation {read}, "
        f"age {duration(snap.read_gen_age)}, {snap.read_gen_reads} reads "
        f"({snap.reads_per_sample:.2f} per sample), reuse wait {snap.reuse_wait_seconds:.1f} s"
        f"{_health_table(snap)}{_errors_html(errors if errors is not None else _error_texts(snap, []))}</div>"
    )


def sparkline_svg(history: Any, cap: int, width: int = 480, height: int = 90) -> str:
    """An inline SVG of the fill (line, left scale 0..cap) and swaps (steps, right scale) over time.

    ``history`` holds ``(time, fill, swaps)`` tuples.  Colours follow the JupyterLab theme.
    """
    pad_l, pad_r, pad_t, pad_b = 34, 34, 6, 16
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    pts = list(history)
    axis = "var(--jp-ui-font-color2, #666)"
    fill_c, swap_c = "var(--jp-brand-color1, #1976d2)", "var(--jp-warn-color1, #e65100)"
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"style='font-family:var(--jp-ui-font-family, sans-serif);font-size:10px'>",
             f"<rect x='{pad_l}' y='{pad_t}' width='{w}' height='{h}' fill='none' stroke='{axis}' "
             f"stroke-opacity='0.4'/>"]
    cap = max(1, int(cap))
    if pts:
        t0, t1 = pts[0][0], pts[-1][0]
        span = max(t1 - t0, 1e-9)
        s0 = min(p[2] for p in pts)
        s1 = max(max(p[2] for p in pts), s0 + 1)

        def x(t: float) -> float:
            return pad_l + (t - t0) / span * w

        fill_line = " ".join(f"{x(t):.1f},{pad_t + h - min(f, cap) / cap * h:.1f}" for t, f, _ in pts)
        steps: list[str] = []
        for i, (t, _, sw) in enumerate(pts):
            y = pad_t + h - (sw - s0) / (s1 - s0) * h
            if i:
                steps.append(f"{x(t):.1f},{steps[-1].split(',')[1]}")
            steps.append(f"{x(t):.1f},{y:.1f}")
        parts += [f"<polyline points='{fill_line}' fill='none' stroke='{fill_c}' stroke-width='1.5'/>",
                  f"<polyline points='{' '.join(steps)}' fill='none' stroke='{swap_c}' stroke-width='1.2'/>",
                  f"<text x='{pad_l + w + 3}' y='{pad_t + 8}' fill='{swap_c}'>{s1}</text>",
                  f"<text x='{pad_l + w + 3}' y='{pad_t + h}' fill='{swap_c}'>{s0}</text>",
                  f"<text x='{pad_l + w}' y='{height - 3}' fill='{axis}' text-anchor='end'>{span:.0f} s</text>"]
    parts += [f"<text x='{pad_l - 3}' y='{pad_t + 8}' fill='{fill_c}' text-anchor='end'>{cap}</text>",
              f"<text x='{pad_l - 3}' y='{pad_t + h}' fill='{fill_c}' text-anchor='end'>0</text>",
              f"<text x='{pad_l}' y='{height - 3}' fill='{fill_c}'>fill</text>",
              f"<text x='{pad_l + 24}' y='{height - 3}' fill='{swap_c}'>swaps</text>", "</svg>"]
    return "".join(parts)


class SwapDashboard(widgets.VBox):
    """Fill of the write generation, swaps, samples/s, reuse, generator health, errors and a history plot.

    Args:
        controller: a :class:`~wirehead.notebook.WireheadController`; the dashboard reads its config
            and server, shows its workers' errors, and stops with it.
        config_path, config: instead of a controller, the cache to watch.
        uri: a server URI overriding the config's.
        interval: seconds between background refreshes (by the kernel's one refresher thread).
        autostart: start the background refresher at once (else call :meth:`start` or :meth:`refresh`).
        history: how many refreshes the history plot keeps.

    The last snapshot is :attr:`snapshot`; :meth:`refresh` takes a new one and shows it, and
    :meth:`update` shows a given one.  Failures stay visible: an unreachable server turns the bar
    red and prints the error, and the refresher keeps trying.
    """

    interval = traitlets.CFloat(1.0)
    fill = traitlets.CInt(0)
    swaps = traitlets.CInt(0)

    def __init__(
        self,
        controller: Any = None,
        *,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        uri: Optional[str] = None,
        interval: float = 1.0,
        autostart: bool = True,
        history: int = 600,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval should be a positive number of seconds, but got interval={interval!r}")
        if controller is not None:
            self.config = controller.config
            self.uri = uri or controller.uri
            self._controller = weakref.ref(controller)
            self._lifecycle = controller._runtime  # tells whether the controller was stopped (no reference back)
        else:
            self.config = WireheadConfig.load(config, config_path)
            self.uri = uri
            self._controller = None
            self._lifecycle = None
        self.snapshot: Any = None
        self.error: Optional[str] = None
        self.history: "collections.deque[tuple[float, int, int]]" = collections.deque(maxlen=history)
        self._lock = threading.RLock()

        self.title = widgets.HTML(value="<b>wirehead</b> &middot; waiting for the first snapshot")
        self.progress = widgets.IntProgress(value=0, min=0, max=self.config.swap_cap, description="fill",
                                            bar_style="info", layout=widgets.Layout(width="360px"))
        self.fill_label = widgets.Label(value=f"0 / {self.config.swap_cap}")
        self.stats = widgets.HTML()
        self.health = widgets.HTML()
        self.errors = widgets.HTML()
        self.plot = widgets.HTML()  # an inline SVG sparkline (no matplotlib per refresh)
        super().__init__(children=[self.title, widgets.HBox([self.progress, self.fill_label]), self.stats,
                                   self.health, self.plot, self.errors])
        # stable hooks for styling and for the browser test (tests/ui)
        for part, css in ((self, "wirehead-dashboard"), (self.progress, "wirehead-fill"),
                          (self.stats, "wirehead-stats"), (self.health, "wirehead-health"),
                          (self.plot, "wirehead-plot"), (self.errors, "wirehead-errors")):
            part.add_class(css)
        self.interval = interval
        if controller is not None:
            controller._register_widget(self)
        adopt(self)  # closed when its cell runs again
        if autostart:
            self.start()

    # -- data --------------------------------------------------------------------------------------
    def _controller_errors(self) -> list[str]:
        ctl = self._controller() if self._controller is not None else None
        if ctl is None:
            return []
        with contextlib.suppress(OSError, ValueError):  # a worker's pipe closed meanwhile: no errors to add
            return [f"{w.role} {w.name} ({w.mode}, pid {w.pid}):\n{w.error}" for w in ctl.workers() if w.error]
        return []

    @property
    def stopped(self) -> bool:
        """Whether the dashboard's controller was stopped (the widget then shows its last snapshot, as stopped)."""
        return self._lifecycle is not None and self._lifecycle.closed

    def refresh(self) -> Any:
        """Take a snapshot now and show it; return it (or ``None`` if the server could not be read).

        On a stopped controller it returns at once: the last snapshot, its workers shown as
        stopped and no rate (a private server is gone with the controller; nothing is asked).
        """
        if self.stopped:
            return self.show_stopped()
        try:
            snap = snapshot(self.config, uri=self.uri)
        except Exception as e:  # noqa: BLE001 - shown, not hidden, and retried by the refresher
            with self._lock:
                self.error = f"{type(e).__name__}: {e}"
                self.progress.bar_style = "danger"
                self.errors.value = (f"<pre style='color:#c62828;white-space:pre-wrap'>snapshot failed: "
                                     f"{escape(self.error)}</pre>")
            log.debug("dashboard refresh failed: %s", e)
            return None
        self.update(snap)
        return snap

    def show_stopped(self) -> Any:
        """Show the last snapshot as stopped (workers "stopped", no rate); the controller calls it when it stops."""
        snap = self.snapshot
        if snap is None:
            with self._lock:
                self.error = None
                self.progress.bar_style = ""
                self.title.value = "<b>wirehead</b> &middot; controller stopped"
            return None
        if snap.samples_per_second or snap.health in ("ok", "stalled"):
            ended = [dataclasses.replace(w, status="stopped") if w.status in ("alive", "stalled") else w
                     for w in snap.generators]
            managers = [dataclasses.replace(w, status="stopped") if w.status == "alive" else w for w in snap.managers]
            snap = dataclasses.replace(snap, samples_per_second=0.0, generators=ended, managers=managers)
            self.update(snap)
        with self._lock:
            if "controller stopped" not in self.title.value:
                self.title.value += " &middot; <b>controller stopped</b>"
        return snap

    def update(self, snap: Any) -> None:
        """Show ``snap`` (a :class:`~wirehead.monitor.Snapshot`) in every part of the widget."""
        with self._lock:
            self.error = None
            self.snapshot = snap
            self.history.append((snap.taken_at, int(snap.write_fill), int(snap.swaps)))
            cap = max(1, int(snap.swap_cap))
            self.progress.max = cap
            self.progress.value = min(int(snap.write_fill), cap)
            self.progress.description = f"gen {snap.write_gen}"
            self.progress.bar_style = _BAR_STYLES.get(snap.health, "info")
            self.fill_label.value = f"{snap.write_fill} / {cap}  ({100 * snap.fill_fraction:.0f}%)"
            self.fill = int(snap.write_fill)
            self.swaps = int(snap.swaps)
            read = "none yet" if snap.read_gen is None else f"{snap.read_gen} ({snap.read_gen_size} samples)"
            self.title.value = (f"<b>wirehead</b> &middot; <code>{escape(snap.dbname)}</code> on "
                                f"<code>{escape(snap.uri)}</code> &middot; write generation {snap.write_gen}, "
                                f"read generation {read}")
            self.stats.value = (
                f"<b>{snap.swaps}</b> swaps &middot; <b>{snap.samples_per_second:.2f}</b> samples/s &middot; "
                f"read generation age {duration(snap.read_gen_age)}, {snap.read_gen_reads} reads, "
                f"<b>{snap.reads_per_sample:.2f}</b> reads per sample, reuse wait {snap.reuse_wait_seconds:.1f} s"
                f" &middot; orphans {snap.orphan_samples}")
            self.health.value = _health_table(snap)
            self.errors.value = _errors_html(_error_texts(snap, self._controller_errors()))
            self.plot.value = sparkline_svg(self.history, int(snap.swap_cap))

    @property
    def health_rows(self) -> list[tuple[str, str, str, str, int, float]]:
        """``(kind, name, host:pid, status, produced, seconds since beat)`` per worker, as shown."""
        return _worker_rows(self.snapshot) if self.snapshot is not None else []

    @property
    def error_texts(self) -> list[str]:
        """The errors the widget shows (tracebacks included)."""
        return _error_texts(self.snapshot, self._controller_errors())

    def _render_plot(self) -> bytes:
        fig = new_figure(figsize=(4.8, 1.6), dpi=100)
        ax = fig.add_subplot(111)
        with self._lock:  # the refresher appends meanwhile: one copy, so x and y have the same length
            history = list(self.history)
        if history:
            t0 = history[0][0]
            ts = [t - t0 for t, _, _ in history]
            ax.plot(ts, [f for _, f, _ in history], color="#1976d2", lw=1.5, label="fill")
            ax2 = ax.twinx()
            ax2.step(ts, [s for _, _, s in history], where="post", color="#e65100", lw=1.2, label="swaps")
            ax2.set_ylabel("swaps", fontsize=8, color="#e65100")
            ax2.tick_params(labelsize=7)
        ax.set_ylim(0, max(1, int(self.config.swap_cap)) * 1.05)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel("fill", fontsize=8, color="#1976d2")
        ax.tick_params(labelsize=7)
        fig.tight_layout(pad=0.3)
        return figure_png(fig)

    # -- the refresher -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start refreshing in the background (idempotent): a task of the kernel's one refresher thread."""
        REFRESHER.every(self, "refresh", float(self.interval), self._tick)

    def _tick(self) -> None:
        if self.stopped:  # the controller stopped meanwhile: show it once, then nothing more to do
            REFRESHER.cancel(self)
        self.refresh()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop refreshing in the background; the widget keeps showing the last snapshot."""
        REFRESHER.cancel(self, timeout=timeout)

    def close(self) -> None:
        """Stop refreshing and close the widget (also done when its cell runs again)."""
        self.stop()
        super().close()

    @property
    def running(self) -> bool:
        """Whether the dashboard is refreshed in the background."""
        return "refresh" in REFRESHER.tasks(self)

    # -- without a frontend ------------------------------------------------------------------------
    def format_text(self) -> str:
        """The snapshot as ``wirehead status`` prints it (plus the controller's errors)."""
        if self.snapshot is None:
            return f"SwapDashboard({self.config!r}): no snapshot yet" + (f" ({self.error})" if self.error else "")
        extra = self._controller_errors()
        return self.snapshot.format_text() + ("\n" + "\n".join(extra) if extra else "")

    def __repr__(self) -> str:
        return self.format_text()

    def _ipython_display_(self) -> None:
        embed.display(self)  # the widget, then what draws its snapshot in an HTML export with stored widget state

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self.snapshot is None:  # displayed before the first refresh: the fallback shows a real snapshot
            self.refresh()
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.format_text()
        if self.snapshot is not None:
            with self._lock:  # the refresher appends meanwhile
                history = list(self.history)
            data["text/html"] = (snapshot_html(self.snapshot, _error_texts(self.snapshot, self._controller_errors()))
                                 + sparkline_svg(history, int(self.snapshot.swap_cap)))
            data["image/png"] = b64(self._render_plot())
        return data
