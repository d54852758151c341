"""Compare two COCO results files image by image: the detections of the same exported model
from two runtimes (e.g. the Python runtime's ``coco_instances_results.json`` and the Node.js
client's output).

    python scripts/compare_coco_results.py REFERENCE.json OTHER.json [--box-atol 1e-3]
        [--score-atol 1e-5]

Prints the per-image maximum differences and exits 0 when every image has the same
detections: the same count and categories, boxes (x, y, w, h) within --box-atol pixels, scores
within --score-atol; detections whose scores tie within --score-atol are paired in either order
(``retina_focal.export.parity.compare_results``). Exit status 1 otherwise, 2 for a bad file.
"""
import argparse
import json
import sys


def _read(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read {path!r}: {e}")
    if not isinstance(data, list) or any(
            not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(d)
            for d in data):
        raise SystemExit(f"error: {path!r} is not a COCO results list "
                         "([{image_id, category_id, bbox, score}, ...])")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("reference")
    p.add_argument("other")
    p.add_argument("--box-atol", type=float, default=1e-3, help="pixels (default 1e-3)")
    p.add_argument("--score-atol", type=float, default=1e-5, help="(default 1e-5)")
    args = p.parse_args(argv)
    reference, other = _read(args.reference), _read(args.other)
    from retina_focal.export.parity import compare_results

    report = compare_results(reference, other, atol=args.score_atol, box_atol=args.box_atol,
                             box_rtol=0.0)
    differ = [r for r in report["images"] if not r["same"]]
    print(f"{report['num_images']} images, {len(reference)} / {len(other)} detections; max box "
          f"difference {report['max_box_difference']} px, max score difference "
          f"{report['max_score_difference']}")
    for r in differ[:20]:
        print(f"  image_id {r['image_id']}: detections {r['detections'][0]} / "
              f"{r['detections'][1]}, same categories {r['same_classes']}, max box "
              f"{r['max_box_difference']}, max score {r['max_score_difference']}")
    if differ:
        print(f"DIFFERENT on {len(differ)} of {report['num_images']} images")
        return 1
    print(f"the same detections on every image (boxes within {args.box_atol} px, scores within "
          f"{args.score_atol})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
