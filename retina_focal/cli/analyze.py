"""``retina-focal analyze`` (``tools/analyze_assignment.py``): which anchors become positive /
negative / ignored, and which objects get none: statistics of the anchor assigner over a
dataset, without training.

    retina-focal analyze --config-file CFG [KEY VALUE ...] \\
        [--compare OTHER_CFG [KEY VALUE ...]] ...

docs/assignment.md ("Looking at it") says how --compare and the dataset are read, and the output.
"""
import argparse
import logging
import sys

from retina_focal.analysis import format_table
from retina_focal.analysis.settings import (
    analyze_settings,
    choose_dataset,
    dataset_dicts,
    load_cfg,
    register_dataset_arg,
    write_assignment_report,
)
from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import add_dataset_argument
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_dir, make_output_dir


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    add_dataset_argument(p, then="it is analysed (with several, name one in --dataset-name)")
    p.add_argument("--dataset-name", default=None, help="the registered dataset to analyse")
    p.add_argument("--output", default="output/assignment_analysis", metavar="DIR")
    p.add_argument("--max-images", type=int_at_least(0), default=0,
                   help="analyse only the first N (0: all)")
    p.add_argument("--iou-bins", type=int_at_least(1), default=20,
                   help="bins of the best-IoU histogram")
    add_allow_unsafe_config_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the config")
    return p


def split_compare(argv):
    """argv -> (main argv, [[config, opt, opt, ...], ...]) split at each --compare."""
    chunks, current = [], None
    main = []
    for arg in argv:
        if arg == "--compare":
            current = []
            chunks.append(current)
        elif current is None:
            main.append(arg)
        else:
            current.append(arg)
    for c in chunks:
        if not c:
            raise SystemExit("error: --compare needs a config file: --compare CONFIG "
                             "[KEY VALUE ...]")
    return main, chunks


def parse_args(argv=None):
    """argv -> (the main config's arguments, [(compared config, its overrides), ...])."""
    argv = sys.argv[1:] if argv is None else argv
    main_argv, compares = split_compare(argv)
    return build_parser().parse_args(main_argv), [(c[0], c[1:]) for c in compares]


def main(args, compares=()):
    """Analyse every setting on the dataset; print the table, write assignment.json and the
    plots; return the settings' records."""
    check_output_dir(args.output, "--output")  # a file in the way: refused before the work
    registered = [register_dataset_arg(spec) for spec in args.dataset]
    specs = [(args.config_file, args.opts)] + list(compares)
    cfgs = [load_cfg(f, o, allow_unsafe=args.allow_unsafe_config) for f, o in specs]
    dataset = choose_dataset(args.dataset_name, registered, cfgs[0])
    dicts, class_names = dataset_dicts(dataset, args.max_images)
    settings_out, summaries = analyze_settings(specs, cfgs, dicts, class_names, args.iou_bins)

    make_output_dir(args.output, "--output")
    json_path, pngs = write_assignment_report(args.output, dataset, class_names, settings_out,
                                              summaries)

    print(f"\nAnchor assignment on {dataset} ({len(dicts)} images, test-time size)")
    for s in settings_out:
        print(f"  {s['name']}: {s['description']}\n     {s['assigner']}")
    print()
    print(format_table(summaries))
    print(f"\nwrote {json_path}")
    for p in pngs:
        print(f"wrote {p}")
    return settings_out


@reports_user_errors
def run(argv=None) -> int:
    args, compares = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    main(args, compares)
    return 0
