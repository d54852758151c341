"""COCO-format datasets from the command line: ``--dataset NAME=JSON:IMAGE_DIR`` (repeatable).

Every tool calls :func:`add_dataset_argument` on its parser and :func:`register_dataset_specs`
in each process (before the config is used), so a config can name the datasets in
``DATASETS.TRAIN`` / ``DATASETS.TEST``. Class names (and their count) come from the JSON's
``categories``; :func:`retina_focal.data.checks.check_num_classes` compares them with the
model's before anything runs. Every annotation's ``bbox`` is checked when the dataset is
registered (:func:`check_coco_boxes`): one that is not 4 finite numbers is an error naming the
file, the image and the annotation. So is a ``category_id`` or ``image_id`` that the file's
``categories`` or ``images`` do not define, and a category without an integer ``id`` and a
``name`` (:func:`check_coco_references`).
"""
import argparse
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from retina_focal.data.checks import bbox_problem, describe_annotation
from retina_focal.utils.errors import DataError, DataFileNotFound
from retina_focal.utils.file_io import read_json

__all__ = [
    "DatasetSpec",
    "add_dataset_argument",
    "check_coco_boxes",
    "check_coco_references",
    "check_image_files",
    "check_registered",
    "load_registered",
    "parse_dataset_spec",
    "register_coco_dataset",
    "register_dataset_specs",
]

DatasetSpec = Tuple[str, str, str]  # (name, json_file, image_root)
_FORMAT = "NAME=JSON:IMAGE_DIR"


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """``"mine_train=ann/train.json:images/train"`` -> ``("mine_train", "ann/train.json",
    "images/train")``. The JSON path is split off at its first ``.json:`` if there is one (so
    other colons may appear in paths), else at the first ``:``."""
    name, eq, rest = spec.partition("=")
    if not eq or not name.strip():
        raise DataError(f"--dataset {spec!r} is invalid: expected {_FORMAT}")
    cut = rest.lower().find(".json:")
    if cut >= 0:
        json_file, image_root = rest[:cut + 5], rest[cut + 6:]
    else:
        json_file, _, image_root = rest.partition(":")
    if not json_file or not image_root:
        raise DataError(f"--dataset {spec!r} is invalid: expected {_FORMAT} "
                         "(both the JSON file and the image folder are needed)")
    return name.strip(), json_file, image_root


def check_coco_boxes(data: Dict, json_file: str, dataset: str) -> None:
    """Raise ``ValueError`` unless every annotation of the COCO dict ``data`` has a ``bbox`` of
    4 finite numbers ``[x, y, width, height]``.

    Detectron2's ``load_coco_json`` checks only that a bbox is not empty, so ``None`` or NaN
    there fails with a bare ``TypeError``, and 3 numbers or strings fail later in training with
    no file or image named. The message names the dataset, ``json_file``, the image file and
    id, the annotation id and the value, and counts the other malformed boxes."""
    bad: List[Tuple[Optional[Dict], str]] = []  # (annotation or None if not a dict, problem)
    for ann in data.get("annotations") or []:
        if not isinstance(ann, dict):
            bad.append((None, f"annotation {ann!r} is not a JSON object"))
            continue
        if "bbox" not in ann:
            bad.append((ann, "it has no 'bbox'"))
            continue
        problem = bbox_problem(ann["bbox"])
        if problem:
            bad.append((ann, f"bbox {ann['bbox']!r} {problem} ([x, y, width, height])"))
    if not bad:
        return
    ann, problem = bad[0]
    if ann is None:
        where = f"Dataset '{dataset}' ({json_file})"
    else:
        files = {im.get("id"): im.get("file_name") for im in data.get("images") or []
                 if isinstance(im, dict)}
        where = describe_annotation(dataset, json_file, files.get(ann.get("image_id")),
                                    ann.get("image_id"), ann.get("id"))
    more = (f"; {len(bad) - 1} more annotation(s) in this file have a malformed bbox"
            if len(bad) > 1 else "")
    raise DataError(f"{where}: {problem}; fix or remove the annotation{more}")


def _repeated(ids: List) -> List:
    """The values that occur more than once in ``ids``, in the order they repeat (any JSON
    value: compared by ``repr``)."""
    seen, repeated = set(), []
    for i in ids:
        key = repr(i)
        if key in seen and i not in repeated:
            repeated.append(i)
        seen.add(key)
    return repeated


def check_coco_references(data: Dict, json_file: str, dataset: str) -> None:
    """Raise :class:`DataError` unless every category of the COCO dict ``data`` has an integer
    ``id`` (unique) and a string ``name``, and every annotation's ``category_id`` and
    ``image_id`` are defined in ``categories`` and ``images``.

    Detectron2's ``load_coco_json`` stops on an unknown ``category_id`` with a ``KeyError``
    when the dataset is first loaded, and drops an annotation of an unknown image without a
    word (pycocotools' evaluation would count it nowhere). The message names the dataset,
    ``json_file``, the first offending entry and the fix, and counts the others."""
    ids = []
    for cat in data["categories"]:
        if not (isinstance(cat, dict) and isinstance(cat.get("id"), int)
                and not isinstance(cat.get("id"), bool) and isinstance(cat.get("name"), str)):
            raise DataError(f"Dataset '{dataset}' ({json_file}): category {cat!r} needs an "
                            "integer 'id' and a string 'name'")
        ids.append(cat["id"])
    repeated = sorted(_repeated(ids))
    if repeated:
        raise DataError(f"Dataset '{dataset}' ({json_file}): category id(s) {repeated} are "
                        "defined more than once in 'categories'; give each category its own id")
    image_list = [im for im in data.get("images") or [] if isinstance(im, dict)]
    repeated = _repeated([im.get("id") for im in image_list])
    if repeated:
        raise DataError(f"Dataset '{dataset}' ({json_file}): image id(s) {repeated[:5]} are "
                        "used by more than one entry of 'images'; give each image its own id")
    images = {im.get("id"): im.get("file_name") for im in image_list}
    for key, known, what in (("category_id", set(ids), "categories"),
                             ("image_id", set(images), "images")):
        bad = [a for a in data.get("annotations") or []
               if isinstance(a, dict) and a.get(key) not in known]
        if bad:
            ann = bad[0]
            where = describe_annotation(dataset, json_file, images.get(ann.get("image_id")),
                                        ann.get("image_id"), ann.get("id"))
            more = (f"; {len(bad) - 1} more annotation(s) in this file have a {key} not in "
                    f"{what!r}" if len(bad) > 1 else "")
            defined = sorted(known)
            shown = defined if len(defined) <= 12 else defined[:12] + ["..."]
            raise DataError(f"{where}: {key} {ann.get(key)!r} is not defined in the file's "
                            f"{what!r} (ids {shown}); add it there or fix the "
                            f"annotation{more}")


def check_image_files(data: Dict, json_file: str, image_root: str, dataset: str) -> None:
    """Raise :class:`DataFileNotFound` unless every image of the COCO dict ``data`` is a file
    under ``image_root``: a wrong image folder is found at registration, not iterations into
    training (where skipping unreadable images would train on what is left)."""
    missing = [im.get("file_name") for im in data.get("images") or [] if isinstance(im, dict)
               and not os.path.isfile(os.path.join(image_root, str(im.get("file_name"))))]
    if missing:
        total = len(data["images"])
        raise DataFileNotFound(
            f"--dataset {dataset}: {len(missing)} of the {total} images of {json_file} are not "
            f"files in the image folder {image_root!r}, e.g. {missing[0]!r}; give the folder "
            "that holds the JSON's file_name paths")


def _read_coco_json(name: str, json_file: str, image_root: str) -> List[Dict]:
    """The categories of a COCO instances file, after checking its layout, boxes, references
    and image files."""
    data = read_json(json_file, f"--dataset {name}: annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DataError(f"{json_file} is not a COCO instances file: it has no 'categories' "
                         "list")
    if not data["categories"]:
        raise DataError(f"{json_file} defines no categories")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{json_file} is not a COCO instances file: it has no {key!r}")
    check_coco_boxes(data, json_file, name)
    check_coco_references(data, json_file, name)
    check_image_files(data, json_file, image_root, name)
    return data["categories"]


def register_coco_dataset(name: str, json_file: str, image_root: str) -> List[str]:
    """Register a COCO-format dataset with Detectron2's :func:`register_coco_instances`, with
    its class names (and the category-id mapping) in the metadata right away.

    Registering the same name with the same files again is a no-op; with other files, an error.

    Returns:
        the class names, ordered by category id (Detectron2's contiguous ids 0..K-1).
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if not os.path.isfile(json_file):
        what = "is a folder, not a file" if os.path.isdir(json_file) else "does not exist"
        raise DataFileNotFound(f"--dataset {name}: annotation file {json_file!r} {what}")
    if not os.path.isdir(image_root):
        what = "is a file, not a folder" if os.path.exists(image_root) else "does not exist"
        raise DataFileNotFound(f"--dataset {name}: image folder {image_root!r} {what}")
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (meta.get("json_file"), meta.get("image_root")) == (json_file, image_root):
            return list(meta.thing_classes)
        raise DataError(
            f"--dataset {name}: the name is already registered (to "
            f"{meta.get('json_file', 'a non-COCO loader')}); choose another name"
        )
    cats = sorted(_read_coco_json(name, json_file, image_root), key=lambda c: c["id"])
    thing_classes = [c["name"] for c in cats]
    register_coco_instances(name, {}, json_file, image_root)
    # The same values Detectron2's load_coco_json sets when the dataset is loaded.
    MetadataCatalog.get(name).set(
        thing_classes=thing_classes,
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats)},
    )
    return thing_classes


def check_registered(names: Union[str, Sequence[str]], where: str, *,
                     can_register: bool = True, how: Optional[str] = None) -> None:
    """Raise :class:`DataError` unless every dataset of ``names`` is registered; the message
    starts with ``where`` (the option or key that named them, e.g. ``--verify-dataset`` or
    ``DATASETS.TEST``), gives the closest registered names and, where the command has
    ``--dataset NAME=JSON:IMAGE_DIR`` (``can_register``), how to register COCO files (``how``:
    the command's own advice instead)."""
    import difflib

    names = [names] if isinstance(names, str) else list(names)
    registered = DatasetCatalog.list()
    missing = [n for n in names if n not in registered]
    if not missing:
        return
    close = sorted({c for n in missing for c in difflib.get_close_matches(n, registered, n=3)})
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    how = (f" {how}" if how is not None else
           f" Register your COCO files with --dataset {missing[0]}=JSON:IMAGE_DIR, or use a "
           "registered dataset" if can_register else
           " This command has no --dataset NAME=JSON:IMAGE_DIR option to register COCO files: "
           "use a built-in dataset")
    # examples: the built-in synthetic datasets, the shortest (the default preset's) first
    examples = sorted((n for n in registered if n.startswith("synthetic_shapes")),
                      key=lambda n: (len(n), n))[:4]
    raise DataError(
        f"{where}: dataset {', '.join(map(repr, missing))} is not registered.{hint}{how} "
        f"({len(registered)} are registered, e.g. {', '.join(examples)})")


def load_registered(name: str, where: str) -> List[Dict]:
    """The dicts of the registered dataset ``name`` (``DatasetCatalog.get``); a dataset whose
    files cannot be read (e.g. Detectron2's built-in COCO without its files) is a
    :class:`~retina_focal.utils.errors.DataFileNotFound` naming ``where``, the dataset and the
    file, not a traceback."""
    try:
        return DatasetCatalog.get(name)
    except FileNotFoundError as e:
        if isinstance(e, DataFileNotFound):  # ours: it names the file already
            raise
        root = os.environ.get("DETECTRON2_DATASETS")
        now = repr(root) if root else "unset: ./datasets"
        raise DataFileNotFound(
            f"{where}: dataset {name!r} is registered but its files cannot be read ({e}). "
            f"Detectron2's built-in datasets are read below $DETECTRON2_DATASETS (now {now}); "
            "or use your own COCO files (docs/datasets.md, \"Your own COCO-format "
            "dataset\")") from e


def add_dataset_argument(parser: argparse.ArgumentParser,
                         then: str = "use NAME in DATASETS.TRAIN / DATASETS.TEST"
                         ) -> argparse.ArgumentParser:
    """Add the repeatable ``--dataset NAME=JSON:IMAGE_DIR`` option to ``parser``; ``then``:
    how the command uses the registered NAME (its help's end)."""
    parser.add_argument(
        "--dataset", action="append", default=[], metavar=_FORMAT,
        help=f"register a COCO-format dataset under NAME (repeatable); then {then}",
    )
    return parser


def register_dataset_specs(specs: Sequence[str]) -> List[str]:
    """Register every ``NAME=JSON:IMAGE_DIR`` of ``specs`` (the ``--dataset`` options of a
    command); return their names."""
    names: List[str] = []
    for spec in specs:
        name, json_file, image_root = parse_dataset_spec(spec)
        register_coco_dataset(name, json_file, image_root)
        names.append(name)
    return names
