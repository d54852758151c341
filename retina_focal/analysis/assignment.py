"""Anchor-assignment statistics: which anchors an assigner makes positive, negative or ignored,
and which ground truths it leaves without any positive anchor.

Everything here is a pure function of tensors, numbers and an assigner callable (no config):
``tools/analyze_assignment.py`` builds those from a config and a dataset.

The ground truth is taken as the model sees it at test time (resized by the shortest-edge
rule, clipped to the image, crowd and empty boxes dropped, as Detectron2's mapper does), while
each ground truth's COCO size bucket uses its box area in the *original* image, as COCO's
evaluation does (small < 32^2 <= medium < 96^2 <= large).
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data.detection_utils import (
    annotations_to_instances,
    transform_instance_annotations,
)
from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform, TransformList
from detectron2.structures import Boxes, BoxMode, Instances, pairwise_iou

__all__ = [
    "COCO_SIZE_BUCKETS",
    "RETINANET_STRIDES",
    "analyze_image",
    "anchor_count",
    "feature_grid_sizes",
    "format_table",
    "gt_as_model_sees_it",
    "plot_summaries",
    "size_bucket",
    "summarize",
    "resized_image_size",
]

# (name, lowest area, highest area) in pixels^2 of the original image, as COCO's evaluation
COCO_SIZE_BUCKETS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2),
                     ("large", 96.0 ** 2, math.inf))
PERCENTILES = (5, 25, 50, 75, 95)


def size_bucket(area: float) -> str:
    """COCO's size bucket of a box area (pixels^2)."""
    for name, low, high in COCO_SIZE_BUCKETS:
        if low <= area < high:
            return name
    raise ValueError(f"area={area!r} is not a valid box area")


def resized_image_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(h, w) after Detectron2's test-time ResizeShortestEdge(min_size, max_size).

    ``min_size`` 0 means no resize, as in Detectron2.
    """
    if min_size == 0:
        return int(height), int(width)
    return ResizeShortestEdge.get_output_shape(int(height), int(width), int(min_size),
                                               int(max_size))


def feature_grid_sizes(
    image_size: Tuple[int, int], strides: Sequence[int], size_divisibility: int
) -> List[Tuple[int, int]]:
    """The (Hi, Wi) of each feature map for one image padded to ``size_divisibility``.

    Stride-2 convolutions and pools with "same" padding give ceil(n / 2) per step, hence
    ceil(padded / stride) for a power-of-two stride.
    """
    h, w = image_size
    if size_divisibility > 1:
        h = math.ceil(h / size_divisibility) * size_divisibility
        w = math.ceil(w / size_divisibility) * size_divisibility
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


# RetinaNet's anchors (the paper's and Detectron2's defaults): FPN levels P3-P7, 3 scales x 3
# aspect ratios at each location
RETINANET_STRIDES = (8, 16, 32, 64, 128)


def anchor_count(height: int, width: int, images: int = 1,
                 strides: Sequence[int] = RETINANET_STRIDES, per_location: int = 9) -> int:
    """Anchors of ``images`` images padded to ``height x width``: ``per_location`` at each
    location of every level's grid (:func:`feature_grid_sizes`)."""
    grids = feature_grid_sizes((height, width), strides, 1)
    return images * per_location * sum(h * w for h, w in grids)


def gt_as_model_sees_it(
    annotations: List[Dict], orig_size: Tuple[int, int], new_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground truth of one dataset dict, after resizing the image from orig_size to new_size.

    Args:
        annotations: Detectron2 dataset-dict annotations (``bbox``, ``bbox_mode``,
            ``category_id``, optional ``iscrowd``).
        orig_size, new_size: (h, w).

    Returns:
        boxes: (M, 4) XYXY in the resized image, clipped to it; crowd and empty boxes dropped.
        classes: (M,) int64 contiguous category ids.
        orig_areas: (M,) box areas in the original image (for COCO size buckets).
    """
    kept = [a for a in annotations if not a.get("iscrowd", 0)]
    if not kept:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    # Detectron2's own mapper functions, so boxes are bit-identical to what training sees (low-
    # quality matches depend on exact IoU ties). Note: they keep integer COCO boxes integer
    # and truncate them when resizing; that is what the model sees, so it is kept here.
    (oh, ow), (nh, nw) = orig_size, new_size
    tfm = TransformList([ResizeTransform(oh, ow, nh, nw)])
    annos = [transform_instance_annotations(dict(a), tfm, (nh, nw)) for a in kept]
    inst = annotations_to_instances(annos, (nh, nw))
    orig = np.array(
        [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in kept],
        dtype=np.float64,
    )
    orig[:, 0::2] = orig[:, 0::2].clip(0, ow)
    orig[:, 1::2] = orig[:, 1::2].clip(0, oh)
    areas = torch.as_tensor((orig[:, 2] - orig[:, 0]) * (orig[:, 3] - orig[:, 1]))
    boxes, classes = inst.gt_boxes.tensor, inst.gt_classes
    keep = inst.gt_boxes.nonempty(threshold=1e-5)  # Detectron2's filter_empty_instances
    return boxes[keep], classes[keep], areas[keep]


def analyze_image(
    anchors: List[Boxes],
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_areas: torch.Tensor,
    image_size: Tuple[int, int],
    assigner: Callable,
) -> Dict:
    """Assign one image's anchors and count the outcome.

    Args:
        anchors: L Boxes, together R anchors.
        gt_boxes: (M, 4) XYXY boxes.
        gt_classes: (M,) class ids (copied to the record).
        gt_areas: (M,) areas for the size buckets (copied to the record).
        image_size: (h, w) of the image the boxes live in.
        assigner: an :class:`~retina_focal.modeling.anchor_assignment.AnchorAssigner`, called
            as ``assigner(anchors, gt: Instances)`` -> (matched_idxs (R,), match_labels (R,)).

    Returns:
        dict with ``num_positive``, ``num_negative``, ``num_ignored`` (ints), and per ground
        truth (lists of length M): ``gt_class``, ``gt_area``, ``gt_positives`` (number of
        positive anchors matched to it), ``gt_best_iou`` (its highest IoU with any anchor) and
        ``gt_best_level`` (the feature level of that anchor).
    """
    m = len(gt_boxes)
    gt = Instances(tuple(image_size))
    gt.gt_boxes = Boxes(gt_boxes)
    gt.gt_classes = gt_classes
    matched_idxs, match_labels = assigner(anchors, gt)
    positive = match_labels == 1
    record = {
        "num_positive": int(positive.sum()),
        "num_negative": int((match_labels == 0).sum()),
        "num_ignored": int((match_labels == -1).sum()),
        "gt_class": [int(c) for c in gt_classes],
        "gt_area": [float(a) for a in gt_areas],
        "gt_positives": torch.bincount(matched_idxs[positive], minlength=m).tolist(),
    }
    all_anchors = Boxes.cat(anchors)
    if m and len(all_anchors):
        best_iou, best_idx = pairwise_iou(gt.gt_boxes, all_anchors).max(dim=1)
        ends = torch.tensor([len(a) for a in anchors]).cumsum(0)
        record["gt_best_iou"] = best_iou.tolist()
        record["gt_best_level"] = torch.searchsorted(ends, best_idx, right=True).tolist()
    else:
        record["gt_best_iou"] = [0.0] * m
        record["gt_best_level"] = [0] * m
    return record


def _stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    keys = ["mean", "min"] + [f"p{p}" for p in PERCENTILES] + ["max"]
    if len(values) == 0:
        return {k: None for k in keys}
    v = np.asarray(values, dtype=np.float64)
    out: Dict[str, Optional[float]] = {"mean": float(v.mean()), "min": float(v.min())}
    out.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
    out["max"] = float(v.max())
    return out


def _zero_share(groups: List[str], zero: List[bool], order: Sequence[str]) -> Dict[str, Dict]:
    out = {}
    for name in order:
        idx = [i for i, g in enumerate(groups) if g == name]
        n_zero = sum(zero[i] for i in idx)
        out[name] = {"num_gt": len(idx), "zero": n_zero,
                     "share": n_zero / len(idx) if idx else None}
    return out


def summarize(
    records: List[Dict],
    class_names: Sequence[str],
    level_names: Sequence[str],
    iou_bins: int = 20,
) -> Dict:
    """Aggregate :func:`analyze_image` records into the statistics the analysis tool reports.

    Returns a JSON-serialisable dict: ``num_images``, ``num_gt``, ``per_image`` (distribution
    of positive / negative / ignored counts), ``positives_per_gt`` (distribution and a
    histogram ``counts[i]`` = number of ground truths with i positives, the last bin holding
    all larger values), ``zero_positive`` (count, share), ``zero_positive_by_size`` /
    ``_by_class`` / ``_by_level`` ({name: {num_gt, zero, share}}), ``best_iou`` (distribution
    and a histogram over [0, 1]).
    """
    pos = [r["gt_positives"] for r in records]
    gt_pos = [p for r in pos for p in r]
    zero = [p == 0 for p in gt_pos]
    sizes = [size_bucket(a) for r in records for a in r["gt_area"]]
    classes = [class_names[c] for r in records for c in r["gt_class"]]
    levels = [level_names[lv] for r in records for lv in r["gt_best_level"]]
    best = [v for r in records for v in r["gt_best_iou"]]
    cap = 30
    hist_pos = np.bincount(np.minimum(gt_pos, cap), minlength=cap + 1) if gt_pos else \
        np.zeros(cap + 1, dtype=np.int64)
    counts, edges = np.histogram(best, bins=iou_bins, range=(0.0, 1.0))
    return {
        "num_images": len(records),
        "num_gt": len(gt_pos),
        "per_image": {
            key: _stats([r[f"num_{key}"] for r in records])
            for key in ("positive", "negative", "ignored")
        },
        "positives_per_gt": dict(_stats(gt_pos), histogram={
            "counts": hist_pos.tolist(), "last_bin_is_at_least": cap}),
        "zero_positive": {"count": sum(zero), "share": sum(zero) / len(zero) if zero else None},
        "zero_positive_by_size": _zero_share(sizes, zero, [b[0] for b in COCO_SIZE_BUCKETS]),
        "zero_positive_by_class": _zero_share(classes, zero, list(class_names)),
        "zero_positive_by_level": _zero_share(levels, zero, list(level_names)),
        "best_iou": dict(_stats(best),
                         histogram={"edges": edges.tolist(), "counts": counts.tolist()}),
    }


def _fmt(value, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if spec == "%":
        return f"{100 * value:.1f}%"
    return format(value, spec) if isinstance(value, float) else str(value)


def format_table(summaries: Dict[str, Dict]) -> str:
    """A text table, one column per setting (``{name: summarize(...)}``)."""
    from tabulate import tabulate

    names = list(summaries)
    first = summaries[names[0]]
    rows = []

    def row(label, get, spec=".1f"):
        rows.append([label] + [_fmt(get(s), spec) for s in summaries.values()])

    row("images", lambda s: s["num_images"])
    row("ground truths", lambda s: s["num_gt"])
    for key in ("positive", "negative", "ignored"):
        for stat in ("mean", "p5", "p50", "p95"):
            row(f"{key} anchors / image, {stat}", lambda s, k=key, t=stat: s["per_image"][k][t])
    for stat in ("mean", "p5", "p50", "p95"):
        row(f"positives / gt, {stat}", lambda s, t=stat: s["positives_per_gt"][t])
    row("gt with 0 positives", lambda s: s["zero_positive"]["share"], "%")
    for group, label in (("size", "size"), ("level", "best level"), ("class", "class")):
        for name, entry in first[f"zero_positive_by_{group}"].items():
            row(f"  0 positives, {label} {name} (n={entry['num_gt']})",
                lambda s, g=group, n=name: s[f"zero_positive_by_{g}"][n]["share"], "%")
    for stat in ("mean", "p5", "p50"):
        row(f"best-anchor IoU of a gt, {stat}", lambda s, t=stat: s["best_iou"][t], ".3f")
    return tabulate(rows, headers=["statistic"] + names, tablefmt="github",
                    disable_numparse=True)


def plot_summaries(summaries: Dict[str, Dict], out_dir: str) -> List[str]:
    """Write PNG plots comparing the settings; return their paths.

    ``best_iou_hist.png`` (histogram of each ground truth's best-anchor IoU),
    ``zero_positive_share.png`` (share of ground truths without a positive anchor, by size
    bucket, best level and class), ``positives_per_gt.png`` and ``anchors_per_image.png``.
    """
    import os

    from retina_focal.utils.plotting import pyplot

    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    names = list(summaries)
    paths = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in summaries.items():
        h = s["best_iou"]["histogram"]
        ax.stairs(h["counts"], h["edges"], label=name, linewidth=1.8)
    ax.set_xlabel("IoU of each ground truth's best anchor")
    ax.set_ylabel("ground truths")
    ax.legend()
    save(fig, "best_iou_hist.png")

    groups = [("size", "COCO size bucket"), ("level", "FPN level of the best anchor"),
              ("class", "class")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(names)
    for ax, (group, title) in zip(axes, groups):
        keys = list(summaries[names[0]][f"zero_positive_by_{group}"])
        x = np.arange(len(keys))
        top = 0.0
        for i, (name, s) in enumerate(summaries.items()):
            shares = [100 * (s[f"zero_positive_by_{group}"][k]["share"] or 0.0) for k in keys]
            ax.bar(x + i * width - 0.4 + width / 2, shares, width, label=name)
            top = max([top] + shares)
        ax.set_ylim(0, max(5.0, 1.15 * top))
        ax.set_xticks(x)
        counts = [summaries[names[0]][f"zero_positive_by_{group}"][k]["num_gt"] for k in keys]
        ax.set_xticklabels([f"{k}\n(n={n})" for k, n in zip(keys, counts)],
                           rotation=30 if group == "class" else 0)
        ax.set_title(title)
        ax.set_ylabel("% of ground truths with 0 positives")
    axes[0].legend()
    save(fig, "zero_positive_share.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, s) in enumerate(summaries.items()):
        counts = s["positives_per_gt"]["histogram"]["counts"]
        ax.bar(np.arange(len(counts)) + i * width - 0.4 + width / 2, counts, width, label=name)
    ax.set_xlabel("positive anchors of a ground truth (last bar: that many or more)")
    ax.set_ylabel("ground truths")
    ax.legend()
    save(fig, "positives_per_gt.png")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, ("positive", "negative", "ignored")):
        stats = [s["per_image"][key] for s in summaries.values()]
        ax.bar(np.arange(len(names)), [st["mean"] or 0 for st in stats],
               yerr=[[max((st["mean"] or 0) - (st["p5"] or 0), 0) for st in stats],
                     [max((st["p95"] or 0) - (st["mean"] or 0), 0) for st in stats]],
               capsize=4, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names)
        ax.set_title(f"{key} anchors per image (mean, bars: p5-p95)")
    save(fig, "anchors_per_image.png")
    return paths
