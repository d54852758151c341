"""Write a COCO annotation file that keeps some categories of another, under new ids.

    python scripts/coco_keep_classes.py SRC.json OUT.json 1=3 2=7 3=12

keeps categories 1, 2 and 3 of SRC.json as ids 3, 7 and 12 (names kept) with their
annotations; the other categories' annotations are dropped (their objects stay in the images,
unlabelled). The images are those of SRC.json, unchanged. docs/export.md uses it to make a
3-class dataset with odd category ids from the synthetic split; so do the deploy tests.
"""
import json
import sys
from typing import Dict, List


def keep_classes(src: Dict, ids: Dict[int, int]) -> Dict:
    """``src`` (a COCO dict) with only the categories in ``ids`` (old id -> new id)."""
    known = {c["id"] for c in src["categories"]}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise SystemExit(f"error: category ids {unknown} are not in the file (it has "
                         f"{sorted(known)})")
    if len(set(ids.values())) != len(ids):
        raise SystemExit(f"error: the new ids {sorted(ids.values())} repeat an id")
    out = dict(src)
    out["categories"] = [dict(c, id=ids[c["id"]]) for c in src["categories"] if c["id"] in ids]
    out["annotations"] = [dict(a, category_id=ids[a["category_id"]])
                          for a in src["annotations"] if a["category_id"] in ids]
    return out


def _pairs(args: List[str]) -> Dict[int, int]:
    try:
        return {int(a.split("=")[0]): int(a.split("=")[1]) for a in args}
    except (ValueError, IndexError):
        raise SystemExit(f"error: give OLD=NEW category id pairs, e.g. 1=3 2=7; got {args}")


def main(argv: List[str]) -> int:
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2])
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    src, out, ids = argv[0], argv[1], _pairs(argv[2:])
    try:
        with open(src) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read {src!r}: {e}")
    kept = keep_classes(data, ids)
    with open(out, "w") as f:
        json.dump(kept, f)
    print(f"wrote {out}: {len(kept['categories'])} categories, {len(kept['annotations'])} "
          f"annotations, {len(kept['images'])} images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
