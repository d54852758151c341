"""Training curves from Detectron2's ``metrics.json``, one or several runs overlaid
(``retina-focal plot``).

Figures (PNG): ``losses`` (total, classification ``loss_cls`` and box ``loss_box_reg`` loss),
``num_pos_anchors`` (positive anchors per image, logged by RetinaFocal), ``lr``, ``ap`` (box
AP, AP50 and AP75 at every evaluation, if any) and ``training`` (all of them on one page);
``summary.json``: per run, the last value of every plotted series and the best AP.
"""
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from retina_focal.utils.file_io import make_output_dir
from retina_focal.utils.plotting import pyplot

__all__ = ["FIGURES", "PANELS", "default_plot_dir", "load_metrics", "load_runs", "plot_runs",
           "running_mean"]

logger = logging.getLogger(__name__)

# (file stem, title, [(metrics.json key, label)])
PANELS = [
    ("loss_total", "total loss", [("total_loss", "total")]),
    ("loss_cls", "classification loss", [("loss_cls", "cls")]),
    ("loss_box_reg", "box regression loss", [("loss_box_reg", "box")]),
    ("num_pos_anchors", "positive anchors per image", [("num_pos_anchors", "pos")]),
    ("lr", "learning rate", [("lr", "lr")]),
    ("ap", "box AP (%) at each evaluation",
     [("bbox/AP", "AP"), ("bbox/AP50", "AP50"), ("bbox/AP75", "AP75")]),
]
FIGURES = {
    "losses": ["loss_total", "loss_cls", "loss_box_reg"],
    "num_pos_anchors": ["num_pos_anchors"],
    "lr": ["lr"],
    "ap": ["ap"],
    "training": [p[0] for p in PANELS],
}


def load_metrics(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """``metrics.json`` (one JSON object per line) -> {key: [(iteration, value), ...]}.

    A resumed run logs some iterations twice: the later line wins. A last line cut short (no
    line end: the run was killed while writing it) is skipped with a warning; any other line
    that is not JSON is a ``ValueError`` naming the file and the line number."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (give a run's OUTPUT_DIR or its "
                                "metrics.json)")
    series: Dict[str, Dict[int, float]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a metrics.json (one JSON object per line): it is not "
                         "text") from None
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path} is empty: the run logged no metrics yet")
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines) and not raw.endswith("\n"):
                logger.warning(f"{path}:{lineno}: the last line is cut short (the run was "
                               "killed while writing it?): skipped it, read the "
                               f"{lineno - 1} lines before it")
                continue
            raise ValueError(f"{path}:{lineno} is not a JSON line: {e}") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno} is a JSON {type(row).__name__}, not an object of "
                             "metrics: a metrics.json has one {\"iteration\": ...} object "
                             "per line")
        it = row.get("iteration")
        if it is None:
            continue
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)) \
                    and math.isfinite(value):
                series.setdefault(key, {})[int(it)] = float(value)
    if not series:
        raise ValueError(f"{path} holds no metrics")
    return {k: sorted(v.items()) for k, v in series.items()}


def load_runs(paths: Sequence[str], labels: Optional[Sequence[str]] = None
              ) -> List[Tuple[str, Dict[str, List[Tuple[int, float]]]]]:
    """``[(label, metrics), ...]`` of every run of ``paths`` (a run's folder, OUTPUT_DIR, or its
    ``metrics.json``; :func:`load_metrics`), for :func:`plot_runs`. ``labels``: one legend
    label per run (None: each run folder's name). An unreadable run is :func:`load_metrics`'s
    ``OSError`` or ``ValueError``, naming the file."""
    runs = []
    for i, run_path in enumerate(paths):
        folder = run_path if os.path.isdir(run_path) else \
            os.path.dirname(os.path.abspath(run_path))
        label = labels[i] if labels else os.path.basename(os.path.normpath(folder))
        runs.append((label, load_metrics(run_path)))
    return runs


def default_plot_dir(run_path: str) -> str:
    """Where the plots of runs whose first is ``run_path`` go by default: ``plots/`` in its
    folder."""
    first = run_path if os.path.isdir(run_path) else os.path.dirname(run_path)
    return os.path.join(first, "plots")


def running_mean(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2:
        return y
    kernel = np.ones(min(window, len(y)))
    num = np.convolve(y, kernel, mode="full")[: len(y)]
    den = np.convolve(np.ones_like(y), kernel, mode="full")[: len(y)]
    return num / den


def draw_panel(ax, panel, runs, smooth: int) -> bool:
    _, title, keys = panel
    drawn = False
    colors = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":"]
    for r, (label, metrics) in enumerate(runs):
        for s, (key, key_label) in enumerate(keys):
            if key not in metrics:
                continue
            x, y = (np.asarray(v) for v in zip(*metrics[key]))
            name = label if len(keys) == 1 else f"{label} {key_label}"
            color = colors[r % len(colors)]
            # evaluations and short runs are a few points: show each one
            marker = ("o", "s", "^")[s % 3] if key.startswith("bbox/") or len(x) < 30 else None
            if smooth > 1 and not key.startswith("bbox/") and key != "lr":
                ax.plot(x, y, color=color, alpha=0.25, lw=0.8)
                y = running_mean(y, smooth)
            ax.plot(x, y, styles[s % len(styles)], color=color, marker=marker, lw=1.6,
                    label=name)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                color="gray")
    return drawn


def plot_runs(runs, output_dir: str, smooth: int = 1) -> Dict[str, str]:
    """Write the PNGs and summary.json; return {name: path}."""
    plt = pyplot()
    make_output_dir(output_dir, "--output")
    panels = {p[0]: p for p in PANELS}
    files = {}
    for fig_name, names in FIGURES.items():
        has_any = any(k in m for _, m in runs for n in names for k, _ in panels[n][2])
        if not has_any and fig_name != "training":
            continue  # e.g. no evaluation ran: no ap.png
        cols = 3 if len(names) > 2 else len(names)
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            draw_panel(ax, panels[name], runs, smooth)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        if fig_name == "lr":
            axes[0, 0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.tight_layout()
        path = os.path.join(output_dir, f"{fig_name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files[fig_name] = path

    summary = {}
    for label, metrics in runs:
        entry = {"last_iteration": max(it for s in metrics.values() for it, _ in s)}
        for _, _, keys in PANELS:
            for key, _ in keys:
                if key in metrics:
                    entry[key] = metrics[key][-1][1]
        if "bbox/AP" in metrics:
            best_it, best = max(metrics["bbox/AP"], key=lambda p: p[1])
            entry["best_AP"] = {"iteration": best_it, "AP": best}
        summary[label] = entry
    path = os.path.join(output_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    files["summary"] = path
    return files
