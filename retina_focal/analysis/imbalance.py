"""Foreground-background imbalance of a dataset under an anchor setup, and what it does to the
classification loss at the start of training.

The paper's argument (Lin et al. 2017, section 3.3): with every anchor's class probability
initialised to the prior pi = 0.01, each negative is easy (p_t = 0.99), yet there are so many
of them that under cross entropy they carry most of the loss; the focal term shrinks an easy
negative's loss by (1 - p_t)^gamma = pi^gamma, so under FL the positives carry it. How much
the negatives carry depends only on how many there are per positive, which is what
:func:`imbalance_row` measures and :func:`init_loss_shares` turns into loss shares.

The classification loss is a sigmoid per class: a positive anchor is one positive element and
``K - 1`` negative ones, a negative anchor is ``K`` negative elements (K classes), an ignored
anchor is none. So the per-element imbalance is about K times the per-anchor one.

COCO's figures come from the same functions on COCO-like images drawn by
:func:`coco_like_dicts` from COCO's published object statistics (:data:`COCO_REFERENCE`), with
the paper's anchors at its ablation scale (600 px).
"""
import json
import math
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from detectron2.structures import BoxMode

from retina_focal.config.defaults import PAPER_BEST_LOSSES
from retina_focal.utils.errors import DataError, UserError
from retina_focal.utils.file_io import atomic_write_bytes, atomic_write_text, make_output_dir
from retina_focal.utils.plotting import pyplot

__all__ = [
    "COCO_REFERENCE",
    "COCO_ROW",
    "COCO_TEST_SIZE",
    "IMBALANCE_LOSSES",
    "ImbalanceConfigError",
    "ImbalanceStudyError",
    "coco_like_dicts",
    "coco_row",
    "datasets_to_measure",
    "element_counts",
    "fl_minus_ce",
    "fl_minus_ce_markdown",
    "format_markdown",
    "imbalance_row",
    "imbalance_setting",
    "init_loss_shares",
    "level_name",
    "measure_coco",
    "measure_datasets",
    "measure_imbalance",
    "plot_fl_minus_ce",
    "read_imbalance_study",
    "study_levels",
    "write_imbalance_report",
]

# COCO's published object statistics (train2017: 860,001 boxes on 118,287 images; the size
# shares by area in the original image, as COCO's evaluation buckets them: small < 32^2 <=
# medium < 96^2 <= large). Images are at most 640 px on their longer side; 640x480 is the
# most common size. The within-bucket size and the shape are not published: the sampler
# assumes an area log-uniform in each bucket (``bucket_areas``: small objects from 8x8, large
# ones up to 400x400) and a w/h ratio log-uniform in [1/3, 3].
COCO_REFERENCE: Dict[str, Any] = {
    "objects_per_image": 860001 / 118287,
    "size_shares": {"small": 0.41, "medium": 0.34, "large": 0.25},
    "bucket_areas": {"small": (8.0 ** 2, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                     "large": (96.0 ** 2, 400.0 ** 2)},
    "aspect_range": (1.0 / 3.0, 3.0),
    "image_size": (480, 640),  # (h, w)
    "num_classes": 80,
}
# The losses compared, as (alpha, gamma): Table 1a's best CE and Table 1b's best FL
IMBALANCE_LOSSES = {"CE": PAPER_BEST_LOSSES["CE"], "FL": PAPER_BEST_LOSSES["FL"]}
# the name of COCO's row (:func:`measure_coco`) in the tables
COCO_ROW = "COCO (the paper's anchors at 600 px)"
# the paper's RetinaNet config: the one COCO_ROW names
COCO_PAPER_CONFIG = "retina_focal_R_50_FPN_1x.yaml"


def coco_row(coco_config: str) -> str:
    """The name of the COCO row measured with ``coco_config``: :data:`COCO_ROW` for the
    paper's config, else one naming the config whose anchors were used."""
    name = os.path.basename(coco_config)
    return COCO_ROW if name == COCO_PAPER_CONFIG else f"COCO ({name}'s anchors at 600 px)"


class ImbalanceConfigError(UserError, ValueError):
    """A ``--config-file`` / ``--coco-config`` that is missing or is not a RetinaNet's; the
    message names the option and the file."""


class ImbalanceStudyError(UserError, ValueError):
    """A ``--study`` folder without the imbalance study's readable ``results.json``; the
    message names the folder."""


def coco_like_dicts(num_images: int, seed: int = 0,
                    reference: Mapping = COCO_REFERENCE) -> List[Dict]:
    """``num_images`` Detectron2 dataset dicts (no pixels) whose boxes follow ``reference``:
    a Poisson number of objects per image with its mean, each object's size bucket drawn
    with its shares, its area and w/h ratio log-uniform in the bucket's and the ratio's range,
    its position uniform in the image (the box clipped to it). Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = reference["image_size"]
    names = list(reference["size_shares"])
    shares = np.asarray([reference["size_shares"][n] for n in names], np.float64)
    lo_ratio, hi_ratio = reference["aspect_range"]
    dicts = []
    for i in range(num_images):
        anns = []
        for _ in range(int(rng.poisson(reference["objects_per_image"]))):
            bucket = names[rng.choice(len(names), p=shares / shares.sum())]
            lo, hi = reference["bucket_areas"][bucket]
            area = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            ratio = math.exp(rng.uniform(math.log(lo_ratio), math.log(hi_ratio)))  # w / h
            bw, bh = min(math.sqrt(area * ratio), w), min(math.sqrt(area / ratio), h)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({"bbox": [x0, y0, bw, bh], "bbox_mode": BoxMode.XYWH_ABS,
                         "category_id": 0, "iscrowd": 0})
        dicts.append({"file_name": f"coco_like_{i:06d}", "image_id": i, "height": h,
                      "width": w, "annotations": anns})
    return dicts


def element_counts(num_positive: float, num_negative: float,
                   num_classes: int) -> Tuple[float, float]:
    """(positive, negative) elements of the sigmoid classification loss for anchors of which
    ``num_positive`` are positive and ``num_negative`` negative, with ``num_classes`` classes:
    a positive anchor is 1 positive and K - 1 negative elements, a negative anchor K negative
    ones."""
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: must be >= 1")
    return float(num_positive), num_negative * num_classes + num_positive * (num_classes - 1)


def init_loss_shares(num_positive: float, num_negative: float, num_classes: int,
                     prior: float = 0.01,
                     losses: Mapping[str, Tuple[float, float]] = IMBALANCE_LOSSES
                     ) -> Dict[str, float]:
    """For each loss ``name -> (alpha, gamma)``, the share of the classification loss that the
    negatives carry when every element's probability is the ``prior`` (the head's bias
    initialisation): every negative then has p_t = 1 - prior, an easy example. Per element,
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with alpha_t = alpha for a positive and
    1 - alpha for a negative (alpha < 0: no weighting); gamma 0 is alpha-balanced CE."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior={prior!r}: must be in (0, 1)")
    pos, neg = element_counts(num_positive, num_negative, num_classes)
    out = {}
    for name, (alpha, gamma) in losses.items():
        a_pos, a_neg = (alpha, 1.0 - alpha) if alpha >= 0 else (1.0, 1.0)
        loss_pos = a_pos * (1.0 - prior) ** gamma * -math.log(prior)
        loss_neg = a_neg * prior ** gamma * -math.log(1.0 - prior)
        total = pos * loss_pos + neg * loss_neg
        out[name] = neg * loss_neg / total if total > 0 else float("nan")
    return out


def imbalance_row(records: Sequence[Dict], num_classes: int, prior: float = 0.01) -> Dict:
    """One dataset's imbalance from per-image assignment records
    (:func:`retina_focal.analysis.assignment.analyze_image`'s ``num_positive``,
    ``num_negative``, ``num_ignored``): anchors per image (means), negatives per positive
    anchor and per positive element (ratios of the totals), and :func:`init_loss_shares`
    from the totals."""
    if not records:
        raise ValueError("no images to measure the imbalance of")
    n = len(records)
    totals = {k: float(sum(r[f"num_{k}"] for r in records))
              for k in ("positive", "ignored", "negative")}
    pos_el, neg_el = element_counts(totals["positive"], totals["negative"], num_classes)
    ratio = (lambda a, b: a / b if b else float("inf"))
    return {
        "images": n,
        "objects_per_image": sum(len(r.get("gt_class", ())) for r in records) / n,
        "num_classes": num_classes,
        "anchors_per_image": sum(totals.values()) / n,
        "positive_per_image": totals["positive"] / n,
        "ignored_per_image": totals["ignored"] / n,
        "negative_per_image": totals["negative"] / n,
        "negatives_per_positive": ratio(totals["negative"], totals["positive"]),
        "negative_elements_per_positive": ratio(neg_el, pos_el),
        "init_negative_loss_share": init_loss_shares(totals["positive"], totals["negative"],
                                                     num_classes, prior),
        "prior": prior,
    }


def format_markdown(rows: Mapping[str, Dict]) -> str:
    """``rows`` (name -> :func:`imbalance_row`) as a Markdown table."""
    lines = ["| dataset | images | objects / image | anchors / image | positive | ignored | "
             "negative | negatives per positive anchor | classes | negative elements per "
             "positive | negatives' share of the loss at init, CE | ... FL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        share = r["init_negative_loss_share"]
        lines.append(
            f"| {name} | {r['images']} | {r['objects_per_image']:.1f} | "
            f"{r['anchors_per_image']:,.0f} | {r['positive_per_image']:.1f} | "
            f"{r['ignored_per_image']:.1f} | {r['negative_per_image']:,.0f} | "
            f"{r['negatives_per_positive']:,.0f} | {r['num_classes']} | "
            f"{r['negative_elements_per_positive']:,.0f} | {100 * share['CE']:.1f}% | "
            f"{100 * share['FL']:.2f}% |")
    return "\n".join(lines)


def plot_fl_minus_ce(levels: Sequence[Dict], path: str,
                     reference: Optional[Tuple[str, float]] = None) -> None:
    """AP(FL) - AP(CE) against negatives per positive anchor (log axis), as a PNG at ``path``.

    Args:
        levels: one dict per dataset: ``name``, ``negatives_per_positive``, ``difference``
            (mean AP of FL minus mean AP of CE over seeds, or None), ``half_width`` (half the
            sum of the two losses' ranges over seeds: a difference inside it is not
            separable), ``verdict``.
        reference: ``(name, negatives per positive)`` drawn as a vertical line (COCO's).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    done = [lv for lv in levels if lv.get("difference") is not None]
    xs = [lv["negatives_per_positive"] for lv in done]
    ys = [lv["difference"] for lv in done]
    ax.errorbar(xs, ys, yerr=[lv["half_width"] for lv in done], fmt="o-", capsize=5,
                color="tab:blue", label="mean over seeds; bar: the spread (not separable inside)")
    for lv in done:
        ax.annotate(f"{lv['name']}\n{lv['difference']:+.1f} ({lv['verdict']})",
                    (lv["negatives_per_positive"], lv["difference"]), fontsize=7,
                    textcoords="offset points", xytext=(6, 6))
    ax.axhline(0.0, color="gray", lw=1)
    if reference is not None:
        ax.axvline(reference[1], color="tab:red", ls="--", lw=1,
                   label=f"{reference[0]}: {reference[1]:,.0f}")
    if not done:
        ax.text(0.5, 0.5, "no finished level yet", ha="center", va="center",
                transform=ax.transAxes)
        # the levels' own imbalance sets the axis: a log axis needs a positive range
        marks = [lv["negatives_per_positive"] for lv in levels
                 if (lv.get("negatives_per_positive") or 0) > 0]
        marks += [reference[1]] if reference is not None else []
        ax.set_xlim(min(marks, default=10.0) / 2, max(marks, default=1e4) * 2)
    ax.set_xscale("log")
    ax.set_xlabel("negative anchors per positive anchor (log)")
    ax.set_ylabel("AP(FL) - AP(CE)  (AP points)")
    ax.set_title("Focal loss (gamma 2, alpha .25) minus alpha-balanced CE (alpha .75)",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


# COCO's row is measured at the paper's ablation size (600 px)
COCO_TEST_SIZE = ("INPUT.MIN_SIZE_TEST", "600", "INPUT.MAX_SIZE_TEST", "1000")


def level_name(dataset: str) -> str:
    """The name a dataset's row and study level go by: a ``*_val`` split's preset prefix."""
    return dataset[:-len("_val")] if dataset.endswith("_val") else dataset


def _is_retinanet(meta_architecture: str) -> bool:
    """Whether the registered meta-architecture is Detectron2's RetinaNet or a subclass
    (RetinaFocal): the models whose anchors these counts describe."""
    from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

    if meta_architecture not in META_ARCH_REGISTRY:
        return False
    arch = META_ARCH_REGISTRY.get(meta_architecture)
    return isinstance(arch, type) and issubclass(arch, RetinaNet)


def imbalance_setting(option: str, config_file: str, opts: Sequence[str] = ()):
    """The anchors and assigner of ``config_file`` + ``opts``
    (:class:`~retina_focal.analysis.settings.AssignmentSetting`) that label the images of
    :func:`measure_datasets` / :func:`measure_coco`, built once and before any dataset is
    measured: a missing file, or a config that is not a RetinaNet's, is an
    :class:`ImbalanceConfigError` naming ``option``."""
    from retina_focal.analysis.settings import AssignmentSetting, load_cfg

    try:
        cfg = load_cfg(config_file, list(opts))
    except FileNotFoundError as e:
        raise ImbalanceConfigError(f"{option}: {e}") from e
    advice = ("this command labels anchors as a RetinaNet does: give a RetinaNet or RetinaFocal "
              "config")
    if not _is_retinanet(cfg.MODEL.META_ARCHITECTURE):
        raise ImbalanceConfigError(f"{option} {config_file}: MODEL.META_ARCHITECTURE is "
                                   f"{cfg.MODEL.META_ARCHITECTURE!r}: {advice}")
    try:
        return AssignmentSetting(cfg)
    except ValueError as e:
        raise ImbalanceConfigError(f"{option} {config_file}: {e} ({advice})") from e


def measure_imbalance(setting, dicts: Sequence[Dict], num_classes: int, desc: str) -> Dict:
    """:func:`imbalance_row` of the dataset dicts ``dicts``, each image's anchors labelled by
    ``setting`` (:func:`imbalance_setting`: a config's anchors and assigner at test size; no
    pixel is read), with a progress bar named ``desc`` on stderr."""
    from tqdm import tqdm

    progress = tqdm(dicts, desc=desc, unit="img", file=sys.stderr, mininterval=2.0)
    records = [setting.analyze(d) for d in progress]
    if not any(r["num_positive"] for r in records):  # negatives per positive: undefined
        raise DataError(f"{desc}: no anchor is positive in its {len(records)} images (are its "
                        "objects smaller than the config's anchors?): its imbalance is undefined")
    return imbalance_row(records, num_classes)


def measure_datasets(setting, names: Sequence[str], max_images: int = 0) -> Dict[str, Dict]:
    """:func:`measure_imbalance` of each registered dataset of ``names`` (its first
    ``max_images`` images, 0: all) under ``setting`` (:func:`imbalance_setting`); returns
    ``{name: row}``, a ``*_val`` name keyed by its preset's prefix. The class count is the
    dataset's (its ``thing_classes``), else the config's ``MODEL.RETINANET.NUM_CLASSES``."""
    from detectron2.data import MetadataCatalog

    from retina_focal.data.datasets.coco import load_registered

    loaded = {}
    for name in names:  # every dataset read and checked before the first is measured
        dicts = load_registered(name, "--datasets")[:max_images or None]
        if not any(d.get("annotations") for d in dicts):
            what = f"no object in its {len(dicts)} images" if dicts else "no images"
            raise DataError(f"--datasets {name}: {what}{' (--max-images)' * bool(max_images)}: "
                            "negatives per positive anchor are undefined without objects")
        loaded[name] = dicts
    rows: Dict[str, Dict] = {}
    for name, dicts in loaded.items():
        classes = MetadataCatalog.get(name).get("thing_classes") or []
        num_classes = len(classes) or setting.num_classes
        rows[level_name(name)] = measure_imbalance(setting, dicts, num_classes, name)
    return rows


def measure_coco(setting, num_images: int) -> Dict:
    """COCO's row: :func:`measure_imbalance` of ``num_images`` COCO-like images
    (:func:`coco_like_dicts`) under ``setting``, the paper's RetinaNet config's at 600 px
    (:func:`imbalance_setting` with :data:`COCO_TEST_SIZE`), with COCO's 80 classes."""
    return measure_imbalance(setting, coco_like_dicts(num_images),
                             COCO_REFERENCE["num_classes"], "COCO-like")


def read_imbalance_study(study_dir: str, config_file: Optional[str] = None) -> Dict:
    """The imbalance study's results (``results.json`` in ``study_dir``, as ``retina-focal
    ablate --study imbalance`` writes it); :class:`ImbalanceStudyError` if it cannot be read,
    holds another study, or was trained with another config than ``config_file`` (compared by
    file name: the negatives per positive of another config's anchors would be plotted against
    its AP differences)."""
    if os.path.isfile(study_dir):
        raise ImbalanceStudyError(f"--study {study_dir!r} is a file: give the study's folder "
                                  "(the one holding results.json)")
    path = os.path.join(study_dir, "results.json")
    try:
        with open(path) as f:
            study = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ImbalanceStudyError(f"--study {study_dir!r}: cannot read {path}: {e}")
    kind = study.get("study") if isinstance(study, dict) else None
    if kind != "imbalance":
        held = (f"study {kind!r}" if kind is not None else
                f"no study's results (a JSON {type(study).__name__} without a 'study' key)")
        raise ImbalanceStudyError(f"--study {study_dir!r}: {path} holds {held}, not the "
                                  "imbalance study's (retina-focal ablate --study imbalance)")
    trained = os.path.basename(str(study.get("config_file") or ""))
    if config_file is not None and trained and trained != os.path.basename(config_file):
        raise ImbalanceStudyError(
            f"--study {study_dir!r} was trained with {study['config_file']}, not --config-file "
            f"{config_file}: its AP differences would be plotted against another config's "
            f"anchors. Give --config-file {study['config_file']}")
    return study


def study_levels(study: Dict) -> List[str]:
    """The dataset prefixes of the imbalance study's levels (its settings ``"<prefix> FL"`` /
    ``"<prefix> CE"``, with or without `` seed=N``), in order."""
    levels: List[str] = []
    for row in study.get("settings") or []:
        label = str(row.get("label", "")).split(" seed=")[0] if isinstance(row, dict) else ""
        prefix, _, loss = label.rpartition(" ")
        if loss in ("FL", "CE") and prefix and prefix not in levels:
            levels.append(prefix)
    return levels


def datasets_to_measure(datasets: Optional[Sequence[str]], registered: Sequence[str],
                        study: Optional[Dict] = None) -> List[str]:
    """The datasets the ``imbalance`` command measures: ``--datasets`` (``datasets``), else
    those registered with ``--dataset`` (``registered``), else the imbalance presets'
    validation splits. Refused before any is measured: a ``--dataset`` that is not measured
    (:class:`~retina_focal.utils.errors.DataError`), and a ``study`` level whose dataset
    (``<prefix>_val`` or ``<prefix>``) is not measured (:class:`ImbalanceStudyError`: its
    FL - CE would silently be left out of the plot)."""
    from retina_focal.data import IMBALANCE_PRESETS

    names = list(datasets or registered or [f"{p}_val" for p in IMBALANCE_PRESETS])
    unused = [r for r in registered if r not in names]
    if unused:
        raise DataError(
            f"--dataset {', '.join(unused)}: registered but not measured (not in --datasets "
            f"{','.join(names)}): add {'it' if len(unused) == 1 else 'them'} to --datasets, or "
            "leave --datasets out to measure the --dataset ones")
    measured = {level_name(n) for n in names}
    left_out = [lv for lv in study_levels(study or {}) if lv not in measured]
    if left_out:
        raise ImbalanceStudyError(
            f"--study has the levels {', '.join(left_out)}, whose datasets are not measured: "
            f"their FL - CE would be missing from the plot. Add "
            f"{','.join(f'{lv}_val' for lv in left_out)} to --datasets (or leave --datasets out "
            "for the presets' study)")
    return names


def fl_minus_ce(results: Dict, rows: Dict[str, Dict]) -> List[Dict]:
    """Per level of the imbalance study's ``results`` (its results.json) whose dataset is
    in ``rows`` (name -> imbalance_row, keyed by the preset's prefix): the mean AP of FL
    minus that of CE, half the sum of their ranges over seeds (the error bar; with two seeds
    the two ranges overlap exactly when the difference is inside it) and the claim's verdict."""
    # a study run without --seeds has no seed summary: its runs, one per setting
    summary = results.get("seed_summary") or results.get("run_summary") or {}
    verdicts = {c["better"]: c["verdict"] for c in results.get("claims", [])}
    levels = []
    for prefix, row in rows.items():
        fl: Dict = summary.get(f"{prefix} FL") or {}  # {}: the setting has no summary
        ce: Dict = summary.get(f"{prefix} CE") or {}
        done = fl and ce and fl["mean"] is not None and ce["mean"] is not None
        levels.append({
            "name": prefix, "negatives_per_positive": row["negatives_per_positive"],
            "images": row["images"],
            "ap_fl": fl["mean"] if done else None, "ap_ce": ce["mean"] if done else None,
            "seeds": min(fl["seeds"], ce["seeds"]) if done else 0,
            "difference": fl["mean"] - ce["mean"] if done else None,
            "half_width": (fl["spread"] + ce["spread"]) / 2 if done else None,
            "verdict": verdicts.get(f"{prefix} FL", "not run"),
        })
    return levels


def fl_minus_ce_markdown(levels: Sequence[Dict]) -> str:
    """``levels`` (:func:`fl_minus_ce`) as a Markdown table ("-" for a level not run)."""
    lines = ["| dataset | images measured | negatives per positive anchor | seeds | AP FL | AP CE "
             "| AP(FL) - AP(CE) | spread (half) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, spec="{:.1f}"):
        return "-" if v is None else spec.format(v)

    for lv in levels:
        lines.append(f"| {lv['name']} | {lv['images']} | {lv['negatives_per_positive']:,.0f} | "
                     f"{lv['seeds']} | "
                     f"{fmt(lv['ap_fl'])} | {fmt(lv['ap_ce'])} | "
                     f"{fmt(lv['difference'], '{:+.1f}')} "
                     f"| {fmt(lv['half_width'])} | {lv['verdict']} |")
    return "\n".join(lines)


def write_imbalance_report(output: str, rows: Dict[str, Dict], config_file: str,
                           coco_config: Optional[str] = None,
                           study: Optional[Dict] = None) -> Dict[str, Optional[str]]:
    """Write ``rows`` (name -> :func:`imbalance_row`; COCO's named :data:`COCO_ROW`) into the
    folder ``output`` (made if missing): ``imbalance.md`` (:func:`format_markdown`) and
    ``imbalance.json`` (the rows, the config files, COCO's reference figures); with the
    imbalance study's ``study`` (:func:`read_imbalance_study`) also ``fl_minus_ce.png``
    (:func:`plot_fl_minus_ce`, COCO's imbalance as the reference line) and ``fl_minus_ce.md``
    (:func:`fl_minus_ce_markdown`), and the levels in ``imbalance.json``.

    Returns:
        ``{"table": imbalance.md's table, "fl_minus_ce": fl_minus_ce.md's table or None}``.
    """
    make_output_dir(output)  # a file in the way: an error naming --output
    table = format_markdown(rows)
    out: Dict[str, Any] = {"config_file": config_file, "coco_config": coco_config or None,
                           "coco_reference": {k: v for k, v in COCO_REFERENCE.items()},
                           "datasets": rows}
    atomic_write_text(os.path.join(output, "imbalance.md"), table + "\n")
    fl_table = None
    if study is not None:
        levels = fl_minus_ce(study, {k: v for k, v in rows.items() if not k.startswith("COCO")})
        coco = next((v["negatives_per_positive"] for k, v in rows.items()
                     if k.startswith("COCO")), None)
        plot_fl_minus_ce(levels, os.path.join(output, "fl_minus_ce.png"),
                         reference=None if coco is None else ("COCO", coco))
        fl_table = fl_minus_ce_markdown(levels)
        atomic_write_text(os.path.join(output, "fl_minus_ce.md"), fl_table + "\n")
        out["fl_minus_ce"] = levels
    atomic_write_text(os.path.join(output, "imbalance.json"), json.dumps(out, indent=2))
    return {"table": table, "fl_minus_ce": fl_table}
