"""``retina-focal imbalance`` (``tools/imbalance.py``): how imbalanced each dataset is under a
config's anchors, COCO's figures beside them, and, given the imbalance study's directory, the
plot of AP(FL) - AP(CE) against negatives per positive anchor.

    retina-focal imbalance --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        --output docs/ablations/imbalance_cpu_study \\
        [--study docs/ablations/imbalance_cpu_study] [--datasets NAME,NAME] [--max-images N] \\
        [--dataset NAME=JSON:IMAGE_DIR ...] \\
        [--coco-config configs/COCO-Detection/retina_focal_R_50_FPN_1x.yaml] [--coco-images N]

docs/datasets.md ("Imbalance presets") says what it measures, its options and what it writes.
"""
import os
import sys

from retina_focal.cli._args import comma_separated, command_parser, int_at_least
from retina_focal.data.datasets.coco import add_dataset_argument
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_dir

__all__ = ["build_parser", "main", "run"]

_COCO_CONFIG = os.path.join("configs", "COCO-Detection", "retina_focal_R_50_FPN_1x.yaml")


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="the config whose anchors and assigner label the datasets")
    add_dataset_argument(p, then="it is measured (or name it in --datasets)")
    p.add_argument("--datasets", type=comma_separated, default=None,
                   help="comma-separated registered datasets (default: the --dataset ones, "
                        "else the imbalance presets' validation splits)")
    p.add_argument("--max-images", type=int_at_least(0), default=0, help="per dataset (0: all)")
    p.add_argument("--coco-config", default=_COCO_CONFIG, metavar="FILE",
                   help="the paper's RetinaNet config for the COCO row ('' to leave it out)")
    p.add_argument("--coco-images", type=int_at_least(1), default=500,
                   help="COCO-like images drawn for the COCO row")
    p.add_argument("--study", default=None, metavar="DIR",
                   help="the imbalance study's directory (its results.json): plot "
                        "AP(FL) - AP(CE) against negatives per positive")
    p.add_argument("--output", required=True, metavar="DIR")
    return p


def main(args) -> int:
    import retina_focal  # noqa: F401  (registers the datasets)
    from retina_focal.analysis.imbalance import (
        COCO_TEST_SIZE,
        coco_row,
        datasets_to_measure,
        imbalance_setting,
        measure_coco,
        measure_datasets,
        read_imbalance_study,
        write_imbalance_report,
    )
    from retina_focal.data.datasets.coco import check_registered, register_dataset_specs

    check_output_dir(args.output, "--output")  # a file in the way: refused before measuring
    if args.study is not None and not args.study.strip():  # e.g. an unset shell variable
        raise SystemExit(f"error: --study {args.study!r} is empty: give the imbalance study's "
                         "folder, or leave --study out")
    study = read_imbalance_study(args.study, args.config_file) if args.study else None
    names = datasets_to_measure(args.datasets, register_dataset_specs(args.dataset), study)
    check_registered(names, "--datasets")
    # both configs' anchors and assigner, before any dataset is measured
    setting = imbalance_setting("--config-file", args.config_file)
    coco = (imbalance_setting("--coco-config", args.coco_config, COCO_TEST_SIZE)
            if args.coco_config else None)
    rows = measure_datasets(setting, names, args.max_images)
    if coco is not None:
        rows[coco_row(args.coco_config)] = measure_coco(coco, args.coco_images)
    tables = write_imbalance_report(args.output, rows, args.config_file, args.coco_config,
                                    study)
    print(tables["table"])
    if tables["fl_minus_ce"] is not None:
        print("\n" + tables["fl_minus_ce"])
    print(f"wrote {args.output}/imbalance.{{json,md}}"
          + (" and fl_minus_ce.{png,md}" if study is not None else ""))
    return 0


@reports_user_errors
def run(argv=None) -> int:
    return main(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
