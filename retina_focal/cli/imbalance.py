"""``retina-focal imbalance`` (``tools/imbalance.py``): how imbalanced each dataset is under a
config's anchors, COCO's figures beside them, and, given the imbalance study's directory, the
plot of AP(FL) - AP(CE) against negatives per positive anchor.

    retina-focal imbalance --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        --output docs/ablations/imbalance_cpu_study \\
        [--study docs/ablations/imbalance_cpu_study] [--datasets NAME,NAME] [--max-images N] \\
        [--coco-config configs/COCO-Detection/retina_focal_R_50_FPN_1x.yaml] [--coco-images N]

For each dataset (default: the validation splits of the imbalance presets,
``retina_focal.data.IMBALANCE_PRESETS``), the config's assigner labels every anchor at test
size (no pixel is read): positive, ignored and negative anchors per image, negatives per
positive anchor and per positive loss element, and the share of the classification loss the
negatives (all easy at the prior initialisation) carry under CE and under FL. The COCO row is
the same on COCO-like boxes drawn from COCO's published statistics with the paper's anchors at
600 px (``--coco-config``, ``INPUT.MIN_SIZE_TEST 600``). Writes ``imbalance.json`` and
``imbalance.md``; with ``--study``, also ``fl_minus_ce.png`` and ``fl_minus_ce.md``.
"""
import json
import os
import sys
from typing import Dict, List

from retina_focal.cli._args import command_parser
from retina_focal.cli._errors import reports_user_errors
from retina_focal.utils.file_io import atomic_write_text

__all__ = ["build_parser", "fl_minus_ce", "main", "run"]

_COCO_CONFIG = os.path.join("configs", "COCO-Detection", "retina_focal_R_50_FPN_1x.yaml")


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="the config whose anchors and assigner label the datasets")
    p.add_argument("--datasets", default=None,
                   help="comma-separated registered datasets (default: the imbalance presets' "
                        "validation splits)")
    p.add_argument("--max-images", type=int, default=0, help="per dataset (0: all)")
    p.add_argument("--coco-config", default=_COCO_CONFIG, metavar="FILE",
                   help="the paper's RetinaNet config for the COCO row ('' to leave it out)")
    p.add_argument("--coco-images", type=int, default=500,
                   help="COCO-like images drawn for the COCO row")
    p.add_argument("--study", default=None, metavar="DIR",
                   help="the imbalance study's directory (its results.json): plot "
                        "AP(FL) - AP(CE) against negatives per positive")
    p.add_argument("--output", required=True, metavar="DIR")
    return p


def _measure(cfg, dicts, num_classes: int, desc: str) -> Dict:
    from tqdm import tqdm

    from retina_focal.analysis.imbalance import imbalance_row
    from retina_focal.analysis.settings import AssignmentSetting

    setting = AssignmentSetting(cfg)
    progress = tqdm(dicts, desc=desc, unit="img", file=sys.stderr, mininterval=2.0)
    records = [setting.analyze(d) for d in progress]
    return imbalance_row(records, num_classes)


def fl_minus_ce(results: Dict, rows: Dict[str, Dict]) -> List[Dict]:
    """Per level of the imbalance study's ``results`` (its results.json) whose dataset is
    in ``rows`` (name -> imbalance_row, keyed by the preset's prefix): the mean AP of FL
    minus that of CE, half the sum of their ranges over seeds (the error bar; with two seeds
    the two ranges overlap exactly when the difference is inside it) and the claim's verdict."""
    summary = results.get("seed_summary") or {}
    verdicts = {c["better"]: c["verdict"] for c in results.get("claims", [])}
    levels = []
    for prefix, row in rows.items():
        fl: Dict = summary.get(f"{prefix} FL") or {}  # {}: the setting has no summary
        ce: Dict = summary.get(f"{prefix} CE") or {}
        done = fl and ce and fl["mean"] is not None and ce["mean"] is not None
        levels.append({
            "name": prefix, "negatives_per_positive": row["negatives_per_positive"],
            "ap_fl": fl["mean"] if done else None, "ap_ce": ce["mean"] if done else None,
            "seeds": min(fl["seeds"], ce["seeds"]) if done else 0,
            "difference": fl["mean"] - ce["mean"] if done else None,
            "half_width": (fl["spread"] + ce["spread"]) / 2 if done else None,
            "verdict": verdicts.get(f"{prefix} FL", "not run"),
        })
    return levels


def main(args) -> int:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import retina_focal  # noqa: F401  (registers the datasets)
    from retina_focal.analysis.imbalance import (
        COCO_REFERENCE,
        coco_like_dicts,
        format_markdown,
        plot_fl_minus_ce,
    )
    from retina_focal.analysis.settings import load_cfg
    from retina_focal.data import IMBALANCE_PRESETS
    from retina_focal.data.datasets.coco import check_registered

    if args.max_images < 0 or args.coco_images < 1:
        raise SystemExit("error: --max-images must be >= 0 and --coco-images >= 1")
    study = None
    if args.study:
        path = os.path.join(args.study, "results.json")
        try:
            with open(path) as f:
                study = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: --study {args.study!r}: cannot read {path}: {e}")
        if study.get("study") != "imbalance":
            raise SystemExit(f"error: --study {args.study!r} holds study {study.get('study')!r}"
                             ", not the imbalance study (retina-focal ablate --study imbalance)")
    names = ([n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets
             else [f"{p}_val" for p in IMBALANCE_PRESETS])
    check_registered(names, "--datasets", can_register=False)
    cfg = load_cfg(args.config_file, [])
    rows: Dict[str, Dict] = {}
    for name in names:
        dicts = DatasetCatalog.get(name)
        if args.max_images:
            dicts = dicts[:args.max_images]
        classes = MetadataCatalog.get(name).get("thing_classes") or []
        key = name[:-len("_val")] if name.endswith("_val") else name
        rows[key] = _measure(cfg, dicts, len(classes) or cfg.MODEL.RETINANET.NUM_CLASSES, name)
    if args.coco_config:
        coco_cfg = load_cfg(args.coco_config, ["INPUT.MIN_SIZE_TEST", "600",
                                               "INPUT.MAX_SIZE_TEST", "1000"])
        rows["COCO (the paper's anchors at 600 px)"] = _measure(
            coco_cfg, coco_like_dicts(args.coco_images), COCO_REFERENCE["num_classes"],
            "COCO-like")
    os.makedirs(args.output, exist_ok=True)
    table = format_markdown(rows)
    out = {"config_file": args.config_file, "coco_config": args.coco_config or None,
           "coco_reference": {k: v for k, v in COCO_REFERENCE.items()}, "datasets": rows}
    atomic_write_text(os.path.join(args.output, "imbalance.md"), table + "\n")
    print(table)
    if study is not None:
        levels = fl_minus_ce(study, {k: v for k, v in rows.items() if not k.startswith("COCO")})
        coco = next((v["negatives_per_positive"] for k, v in rows.items()
                     if k.startswith("COCO")), None)
        plot_fl_minus_ce(levels, os.path.join(args.output, "fl_minus_ce.png"),
                         reference=None if coco is None else ("COCO", coco))
        lines = ["| dataset | negatives per positive anchor | seeds | AP FL | AP CE | "
                 "AP(FL) - AP(CE) | spread (half) | verdict |", "|---|---|---|---|---|---|---|---|"]

        def fmt(v, spec="{:.1f}"):
            return "-" if v is None else spec.format(v)

        for lv in levels:
            lines.append(f"| {lv['name']} | {lv['negatives_per_positive']:,.0f} | {lv['seeds']} | "
                         f"{fmt(lv['ap_fl'])} | {fmt(lv['ap_ce'])} | "
                         f"{fmt(lv['difference'], '{:+.1f}')} "
                         f"| {fmt(lv['half_width'])} | {lv['verdict']} |")
        atomic_write_text(os.path.join(args.output, "fl_minus_ce.md"), "\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
        out["fl_minus_ce"] = levels
    atomic_write_text(os.path.join(args.output, "imbalance.json"), json.dumps(out, indent=2))
    print(f"wrote {args.output}/imbalance.{{json,md}}"
          + (" and fl_minus_ce.{png,md}" if study is not None else ""))
    return 0


@reports_user_errors
def run(argv=None) -> int:
    return main(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
