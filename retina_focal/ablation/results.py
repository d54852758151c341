"""What an ablation study leaves behind: each run's final COCO metrics (read from its
``metrics.json``) and the study's ``results.json``, ``results.md`` (a table beside the paper's
numbers) and ``results.png`` (a bar chart), rewritten atomically after every setting so they
can be read while the study runs. A timed study (Table 1e) also records each run's
inference time per image, read from its ``log.txt``, and draws ``speed_accuracy.png``
(the paper's Figure 2)."""
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from retina_focal.ablation.studies import Claim, Study
from retina_focal.utils.file_io import atomic_write_bytes, atomic_write_text
from retina_focal.utils.plotting import pyplot

__all__ = ["METRICS", "PROPOSAL_METRICS", "TASK_METRICS", "plot_speed_accuracy",
           "read_final_metrics", "read_inference_time", "seed_summary", "separation", "verdict",
           "write_results"]

# The COCO metrics Detectron2's COCOEvaluator reports for boxes, in percent.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Its proposal recall (a ProposalNetwork's "box_proposals" task), in percent: average recall
# with 100 and 1000 proposals per image, all objects and by size.
PROPOSAL_METRICS = ("AR@100", "ARs@100", "ARm@100", "ARl@100", "AR@1000", "ARs@1000",
                    "ARm@1000", "ARl@1000")
# {evaluation task (the prefix in metrics.json): its metrics, the first one the headline}
TASK_METRICS = {"bbox": METRICS, "box_proposals": PROPOSAL_METRICS}


def read_final_metrics(output_dir: str, task: str = "bbox") -> Optional[Dict[str, Optional[float]]]:
    """The last ``<task>/<metric>`` values (``TASK_METRICS[task]``; ``bbox/AP*`` by default)
    in ``output_dir/metrics.json`` (Detectron2's JSONWriter; the final evaluation is written
    there), or None if there is none. NaN becomes None, except that a model without any
    detection (Detectron2 logs "No predictions from the model!") gets 0 for every box
    metric."""
    names = TASK_METRICS[task]
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return None
    found = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if f"{task}/{names[0]}" in row:
                found = row
    if found is None:
        return None
    metrics = {m: _finite(found.get(f"{task}/{m}")) for m in names}
    if task == "bbox" and all(v is None for v in metrics.values()) and \
            _no_predictions(output_dir):
        # Detectron2 reports NaN when the model detects nothing at all (pycocotools cannot
        # evaluate an empty result list); with ground truth present that is an AP of 0.
        metrics = {m: 0.0 for m in names}
    return metrics


# Detectron2's inference_on_dataset (0.6 and main): the model's own time per iteration (one
# image: the test loader's batch is 1), without data loading and the evaluator's work, over
# the iterations after its warm-up.
_PURE_COMPUTE = re.compile(r"Total inference pure compute time: \S+ \(([0-9.eE+-]+) s / iter "
                           r"per device, on (\d+) devices\)")


def read_inference_time(output_dir: str) -> float:
    """Seconds per image of the last evaluation in ``output_dir/log.txt``: the pure compute
    time Detectron2's ``inference_on_dataset`` logs (per device: one image per iteration).

    Raises:
        FileNotFoundError: there is no ``log.txt``.
        ValueError: the log has no such line (the run did not evaluate); the error names the
            file and the line looked for.
    """
    path = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: the run's inference time per image "
                                "is read from its log")
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            match = _PURE_COMPUTE.search(line)
            if match:
                found = float(match.group(1))
    if found is None:
        raise ValueError(f"{path} has no 'Total inference pure compute time: ... (X s / iter "
                         "per device, ...)' line (Detectron2's inference_on_dataset): the run "
                         "did not evaluate, so its inference time per image is unknown")
    return found


def _no_predictions(output_dir: str) -> bool:
    """Whether Detectron2's COCOEvaluator logged that the model made no detection."""
    path = os.path.join(output_dir, "log.txt")
    if not os.path.exists(path):
        return False
    with open(path, errors="replace") as f:
        return any("No predictions from the model!" in line for line in f)


def _finite(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else 1000.0 * seconds


def write_results(study: Study, rows: List[Dict], out_dir: str, header: Dict) -> Dict[str, str]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``.

    Args:
        rows: one dict per run, in study order: ``label``, ``paper_ap``, ``status``
            ("done" / "failed" / "pending"), ``metrics`` (``TASK_METRICS[study.task]`` ->
            float or None, or None), ``wall_s``, ``overrides`` (list of strings); with
            ``--seeds``, also ``setting`` (the study's label) and ``seed``; in a timed study
            (``study.timed``), also ``inference_s_per_image`` (float or None), ``paper_ms``
            and ``curve`` (``[line, point]``).
        header: run information (config, schedule, command, ...), stored in the JSON and
            printed above the Markdown table; ``overrides`` (``[{"key", "value",
            "schedule_value" if the schedule sets the key}]``, the command line's) and
            ``solver`` ({key: value} as the runs had them) are printed as what ran, and
            ``datasets`` (the ``--dataset`` specs) as the datasets registered.

    Returns:
        {"json", "md", "png"}, and "speed_accuracy" for a timed study: the paths written.
    """
    paths = {k: os.path.join(out_dir, f"results.{k}") for k in ("json", "md", "png")}
    if study.timed:
        paths["speed_accuracy"] = os.path.join(out_dir, "speed_accuracy.png")
    names = TASK_METRICS[study.task]
    summary = seed_summary(rows, names[0])
    # the orderings are judged on every finished run (one run each: "too few seeds")
    every_run = seed_summary(rows, names[0], every_run=True)
    claim_lines, claims = _claims_table(study, every_run)
    # "run_summary": every finished run per setting, seeded or not (what the claims judge)
    atomic_write_text(paths["json"], json.dumps(
        {"study": study.name, "title": study.title, "paper_note": study.paper_note,
         **header, "settings": rows, "seed_summary": summary, "run_summary": every_run,
         "claims": claims}, indent=2))

    lines = [f"## Study {study.name}: {study.title}", ""]
    for key in ("command", "config_file", "schedule", "schedule_description"):
        if header.get(key):
            lines.append(f"- {key.replace('_', ' ')}: `{header[key]}`")
    lines += _what_ran(header)
    # a timed study: our inference ms per image, then the paper's, after the paper's AP
    timed = " ms / image | paper ms |" if study.timed else ""
    # the paper's AP where the paper has numbers for the study (the focal-RPN ones: none)
    paper = any(s.paper_ap is not None for s in study.settings)
    lines += ["", "| setting | " + " | ".join(names) + (" | paper AP" if paper else "")
              + f" |{timed} train+eval s |",
              "|---|" + "---|" * (len(names) + 1 + paper + 2 * study.timed)]
    for r in rows:
        m = r.get("metrics") or {}
        cells = [_fmt(m.get(k)) for k in names] if r["status"] == "done" else (
            [r["status"]] + [""] * (len(names) - 1))
        wall = "" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"
        times = (f" {_fmt(_ms(r.get('inference_s_per_image')))} | {_fmt(r.get('paper_ms'))} |"
                 if study.timed else "")
        lines.append(f"| {r['label']} | " + " | ".join(cells)
                     + (f" | {_fmt(r.get('paper_ap'))}" if paper else "") + f" |{times} {wall} |")
    lines += _spread_lines(summary, names[0], study.compare_to_best)
    lines += claim_lines
    if study.paper_note:
        lines += ["", study.paper_note]
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")

    _plot(study, rows, summary, paths["png"])
    if study.timed:
        plot_speed_accuracy(rows, study.paper_speed, paths["speed_accuracy"],
                            title=f"Study {study.name}: {study.title}",
                            metric=TASK_METRICS[study.task][0])
    return paths


def _what_ran(header: Dict) -> List[str]:
    """results.md's lines of the command line's overrides (a key of the schedule beside the
    schedule's value: the description above is the schedule's own) and of the solver settings
    the runs had."""
    lines = []
    if header.get("overrides"):
        given = [f"`{o['key']} {o['value']}`"
                 + (f" (the schedule's: `{o['schedule_value']}`)" if "schedule_value" in o
                    else "") for o in header["overrides"]]
        lines.append("- overrides (every setting, after the schedule's keys): "
                     + ", ".join(given))
    if header.get("datasets"):
        lines.append("- datasets (--dataset): " + ", ".join(f"`{d}`" for d in header["datasets"]))
    if header.get("solver"):
        lines.append("- solver (what ran): " + ", ".join(
            f"`{key} {tuple(v) if isinstance(v, list) else v}`"
            for key, v in header["solver"].items()))
    return lines


def seed_summary(rows: List[Dict], metric: str, every_run: bool = False) -> Dict[str, Dict]:
    """Per setting repeated over seeds (rows with ``setting`` and ``seed``), in row order:
    ``{"values": [metric of each finished seed], "seeds": n, "mean", "min", "max", "spread",
    "failed": runs that failed}`` (``spread`` = max - min, the run-to-run spread; None where no
    seed finished). Empty when the study ran without ``--seeds``, unless ``every_run``: then a
    run without a seed counts as one run of its setting (a run tabled twice, with and without
    its seed, once)."""
    by_setting: Dict[str, List[float]] = {}
    failed: Dict[str, int] = {}
    seen = set()
    for r in rows:
        if r.get("seed") is None and not every_run:
            continue
        setting = r.get("setting", r["label"])
        values = by_setting.setdefault(setting, [])
        if r["status"] == "failed":
            failed[setting] = failed.get(setting, 0) + 1
        value = (r.get("metrics") or {}).get(metric)
        run = r.get("output_dir") or r["label"]
        if r["status"] == "done" and value is not None and run not in seen:
            seen.add(run)
            values.append(float(value))
    out = {}
    for label, values in by_setting.items():
        lo, hi = (min(values), max(values)) if values else (None, None)
        out[label] = {"values": values, "seeds": len(values),
                      "mean": sum(values) / len(values) if values else None,
                      "min": lo, "max": hi,
                      "spread": None if lo is None or hi is None else hi - lo,
                      "failed": failed.get(label, 0)}
    return out


def separation(a: Sequence[float], b: Sequence[float]) -> str:
    """How two settings' per-seed scores compare: ``"higher"`` if every run of ``a`` scores
    above every run of ``b``, ``"lower"`` if every one scores below, else ``"not separable"``
    (their ranges over seeds overlap: the difference is within the run-to-run spread).
    Either with fewer than 2 runs: ``"too few seeds"`` (one run has no spread to compare
    with)."""
    if len(a) < 2 or len(b) < 2:
        return "too few seeds"
    if min(a) > max(b):
        return "higher"
    if max(a) < min(b):
        return "lower"
    return "not separable"


def verdict(claim: Claim, summary: Dict[str, Dict]) -> str:
    """The verdict on one of the paper's orderings from :func:`seed_summary`'s output:
    "reproduced", "not reproduced" or "not separable" (for a "ties" claim, two settings
    within each other's spread are "reproduced (not separable)", two apart are "not
    reproduced"); "not run" or "too few seeds" where the runs are missing (naming the settings
    whose runs failed: "too few seeds: X failed"); "every run scored 0:
    nothing to compare" where every run of both settings scored 0 (a model that detects
    nothing scores 0: two such settings neither tie nor differ; one setting at 0 is below
    the other, as the paper's alpha .10 in Table 1a)."""
    if claim.better not in summary or claim.worse not in summary:
        return "not run"
    better, worse = summary[claim.better]["values"], summary[claim.worse]["values"]
    found = separation(better, worse)
    if found == "too few seeds":
        failed = [label for label in (claim.better, claim.worse)
                  if summary[label].get("failed")]
        return f"too few seeds: {' and '.join(failed)} failed" if failed else found
    if max(better) == 0 and max(worse) == 0:
        return "every run scored 0: nothing to compare"
    if claim.relation == "ties":
        return "reproduced (not separable)" if found == "not separable" else "not reproduced"
    return {"higher": "reproduced", "lower": "not reproduced"}.get(found, found)


def _claims_table(study: Study, summary: Dict[str, Dict]) -> Tuple[List[str], List[Dict]]:
    """results.md lines and results.json entries judging ``study.claims``."""
    if not study.claims:
        return [], []
    lines = ["", "The paper's orderings (a difference within the spread over seeds is not "
             "separable):", "", "| ordering | mean (min-max) | mean (min-max) | difference "
             "of means | verdict |", "|---|---|---|---|---|"]
    entries = []
    for claim in study.claims:
        found = verdict(claim, summary)
        a, b = summary.get(claim.better), summary.get(claim.worse)
        diff = None if not a or not b or a["mean"] is None or b["mean"] is None else \
            a["mean"] - b["mean"]
        entries.append({"claim": claim.text, "better": claim.better, "worse": claim.worse,
                        "relation": claim.relation, "difference": diff, "verdict": found})
        digits = range_digits(a, b)
        lines.append(f"| {claim.text} | {claim.better}: {_range(a, digits)} | {claim.worse}: "
                     f"{_range(b, digits)} | {'-' if diff is None else f'{diff:+.{digits}f}'} "
                     f"| {found} |")
    return lines, entries


def range_digits(a: Optional[Dict], b: Optional[Dict], most: int = 3) -> int:
    """The decimals (1 to ``most``) that show two settings' ranges over seeds (``a`` and
    ``b``, :func:`seed_summary` entries) as they are: at one decimal two ranges apart by less
    than 0.05 can print as touching, and a verdict of "higher" would read as contradicted by
    its own numbers; so digits are added until the printed ends order as the exact ones do."""
    if not a or not b or a["mean"] is None or b["mean"] is None:
        return 1
    for digits in range(1, most + 1):
        pairs = ((a["min"], b["max"]), (b["min"], a["max"]))
        shown = [tuple(float(f"{v:.{digits}f}") for v in pair) for pair in pairs]
        if all((x > y) == (sx > sy) for (x, y), (sx, sy) in zip(pairs, shown)):
            return digits
    return most


def _range(summary: Optional[Dict], digits: int = 1) -> str:
    if not summary or summary["mean"] is None:
        return "-"
    return (f"{summary['mean']:.{digits}f} ({summary['min']:.{digits}f}-"
            f"{summary['max']:.{digits}f})")


def _spread_lines(summary: Dict[str, Dict], metric: str, compare: bool = True) -> List[str]:
    """The table of each setting's mean, min, max and spread of ``metric`` over its finished
    seeds, and (``compare``) how it compares with the best setting (by mean); nothing without
    seeds."""
    if not summary:
        return []
    done = {k: v for k, v in summary.items() if v["mean"] is not None}
    # none is best where every finished setting scored 0 (no model detects anything)
    best = max(done, key=lambda k: done[k]["mean"]) if any(
        v["mean"] > 0 for v in done.values()) else None
    lines = ["", f"Run-to-run spread of {metric} over seeds:", "",
             f"| setting | seeds done | mean {metric} | min | max | spread |"
             + (" vs the best |" if compare else ""),
             "|---|---|---|---|---|---|" + ("---|" if compare else "")]
    for label, v in summary.items():
        if not compare:
            versus = None
        elif label == best:
            versus = "best"
        elif best is None or v["mean"] is None:
            versus = "-"
        else:
            versus = separation(v["values"], done[best]["values"])
            if versus == "lower":
                versus = f"below ({v['mean'] - done[best]['mean']:+.1f})"
        lines.append(f"| {label} | {v['seeds']} | {_fmt(v['mean'])} | {_fmt(v['min'])} | "
                     f"{_fmt(v['max'])} | {_fmt(v['spread'])} |"
                     + ("" if versus is None else f" {versus} |"))
    return lines


def _plot(study: Study, rows: List[Dict], summary: Dict[str, Dict], path: str) -> None:
    """A bar per row; with seeds, a bar per setting at the mean over its seeds, its range over
    seeds as an error bar and each seed as a dot."""
    import numpy as np

    plt = pyplot()
    metric = TASK_METRICS[study.task][0]
    if summary:
        paper_of = {r.get("setting"): r.get("paper_ap") for r in rows}
        labels = list(summary)
        ours = [summary[k]["mean"] for k in labels]
        paper = [paper_of.get(k) for k in labels]
    else:
        labels = [r["label"] for r in rows]
        ours = [((r.get("metrics") or {}).get(metric) if r["status"] == "done" else None)
                for r in rows]
        paper = [r.get("paper_ap") for r in rows]
    x = np.arange(len(labels))
    has_paper = any(p is not None for p in paper)
    width = 0.4 if has_paper else 0.6
    shift = width / 2 if has_paper else 0
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    name = f"this run ({metric})" if not summary else f"mean over seeds ({metric})"
    ax.bar(x - shift, [np.nan if v is None else v for v in ours], width, label=name,
           color="tab:blue")
    if summary:
        for xi, k in zip(x, labels):
            v = summary[k]
            if v["mean"] is None:
                continue
            ax.errorbar([xi - shift], [v["mean"]], yerr=[[v["mean"] - v["min"]],
                                                         [v["max"] - v["mean"]]],
                        color="black", capsize=4, lw=1)
            ax.scatter([xi - shift] * len(v["values"]), v["values"], color="black", s=10,
                       zorder=3)
    if has_paper:
        ax.bar(x + width / 2, [np.nan if v is None else v for v in paper], width,
               label="paper, COCO (AP)", color="tab:gray")
    for xi, v in zip(x, ours):
        if v is not None:
            ax.annotate(f"{v:.1f}", (xi - shift, v), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("box AP (%)" if metric == "AP" else f"proposal {metric} (%)")
    title = f"Study {study.name}: {study.title}"
    if summary:
        title += "\n(bars: mean over seeds; whiskers: min-max; dots: each seed)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def speed_points(rows: Sequence[Dict], metric: str = "AP"
                 ) -> Dict[str, Dict[str, List[Tuple[float, float]]]]:
    """``{line: {point: [(ms per image, metric) of each finished run]}}`` of a timed study's
    ``rows`` (its seeds of one setting are one point's runs), in row order."""
    out: Dict[str, Dict[str, List[Tuple[float, float]]]] = {}
    for r in rows:
        value = (r.get("metrics") or {}).get(metric)
        ms = _ms(r.get("inference_s_per_image"))
        if r["status"] == "done" and value is not None and ms is not None and r.get("curve"):
            line, point = r["curve"]
            out.setdefault(line, {}).setdefault(point, []).append((ms, value))
    return out


def speed_curves(runs: Dict[str, Dict[str, List[Tuple[float, float]]]]
                 ) -> Dict[str, List[Tuple[str, float, float]]]:
    """``{line: [(point, mean ms, mean metric)]}``: :func:`speed_points`' runs averaged per
    point (a setting's seeds)."""
    return {line: [(point, sum(r[0] for r in rs) / len(rs), sum(r[1] for r in rs) / len(rs))
                   for point, rs in points.items()] for line, points in runs.items()}


def plot_speed_accuracy(rows: Sequence[Dict], paper: Sequence[Tuple[str, str, float, float]],
                        path: str, title: str = "", metric: str = "AP") -> None:
    """The paper's Figure 2 for a timed study, as a PNG at ``path``: inference ms per image
    (x) against ``metric`` (y), one line per ``curve[0]`` through its points in row order,
    each point labelled ``curve[1]`` and placed at the mean of its seeds' runs (each a dot).
    Left: ``rows`` (``write_results``'s; those not done or without a time or metric are left
    out). Right, on axes of its own (other hardware, other
    data): ``paper``, ``(line, point, AP, ms)``."""
    plt = pyplot()
    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(11.0, 4.5))
    runs = speed_points(rows, metric)
    ours = speed_curves(runs)  # a point per setting at the mean over its seeds
    for by_point in runs.values():
        for rs in by_point.values():
            if len(rs) > 1:
                ours_ax.scatter([r[0] for r in rs], [r[1] for r in rs], s=10, color="0.4",
                                zorder=3)
    theirs: Dict[str, List[Tuple[str, float, float]]] = {}
    for line, point, ap, ms in paper:
        theirs.setdefault(line, []).append((point, float(ms), ap))
    for ax, curves, where in ((ours_ax, ours, "this study (its data, its device)"),
                              (paper_ax, theirs, "paper: COCO test-dev, Nvidia M40 GPU")):
        for line, points in curves.items():
            xs, ys = [p[1] for p in points], [p[2] for p in points]
            ax.plot(xs, ys, marker="o", label=line)
            for point, x, y in points:
                ax.annotate(point, (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
        if curves:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no finished setting yet", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel("inference time per image (ms)")
        ax.set_ylabel("box AP (%)" if metric == "AP" else f"{metric} (%)")
        ax.set_title(where, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
