"""Class maps: which class each of a model's outputs is, so that a model and a dataset can be
checked against each other by name and id, not only by count.

A *class map* is a list, in the model's contiguous class order (output ``k`` of the
classifier is entry ``k``), of ``{"id": json_id, "name": name}``: the category id of the
dataset the model was trained on (its COCO JSON's ``categories[*].id``; ``None`` when the
dataset has no ids) and the class name. It is plain JSON, so it goes into checkpoints
(``class_map`` entry, written by :class:`~retina_focal.engine.checkpoint.RetinaFocalCheckpointer`)
and next to exported models.

Why names and ids: Detectron2 numbers classes 0..K-1 in the order of the dataset's category
ids. Two JSON files with the same classes under other ids (``{3: cat, 7: dog}`` and
``{3: dog, 7: cat}``) give the same count, so a count check passes, while class 0 means "cat"
in one and "dog" in the other: every AP would be computed under the wrong name.
:func:`match_class_maps` compares by name and returns how to renumber the model's outputs
into the dataset's classes; different names are an error showing both lists.

Every function here is pure (no catalog access) except :func:`class_map_of_datasets`,
:func:`data_class_map` and :func:`outputs_class_map`, which read Detectron2's
``MetadataCatalog``.
"""
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from retina_focal.utils.errors import DataError

__all__ = [
    "ClassMap",
    "class_map_from_categories",
    "class_map_from_metadata",
    "class_map_of_datasets",
    "data_class_map",
    "format_class_map",
    "training_class_map",
    "match_class_maps",
    "outputs_class_map",
    "results_category_ids",
    "validate_class_map",
]

logger = logging.getLogger(__name__)

# [{"id": int | None, "name": str}, ...] in contiguous class order
ClassMap = List[Dict[str, Any]]


def class_map_from_metadata(thing_classes: Optional[Sequence[str]],
                            dataset_id_to_contiguous_id: Optional[Mapping[int, int]] = None
                            ) -> Optional[ClassMap]:
    """The class map of one dataset from its Detectron2 metadata values.

    Args:
        thing_classes: ``metadata.thing_classes`` (K names in contiguous order); ``None``
            (no metadata yet) gives ``None``.
        dataset_id_to_contiguous_id: ``metadata.thing_dataset_id_to_contiguous_id``; when
            absent (a dataset without JSON ids, or not loaded yet), every id is ``None``.

    Raises:
        ValueError: if the mapping does not cover exactly the contiguous ids 0..K-1.
    """
    if thing_classes is None:
        return None
    names = [str(n) for n in thing_classes]
    ids: List[Optional[int]] = [None] * len(names)
    if dataset_id_to_contiguous_id:
        contiguous = sorted(dataset_id_to_contiguous_id.values())
        if contiguous != list(range(len(names))):
            raise DataError(
                f"thing_dataset_id_to_contiguous_id maps to {contiguous} but there are "
                f"{len(names)} thing_classes: the metadata is inconsistent"
            )
        for json_id, k in dataset_id_to_contiguous_id.items():
            ids[k] = int(json_id)
    return [{"id": i, "name": n} for i, n in zip(ids, names)]


def class_map_from_categories(categories: Sequence[Mapping[str, Any]]) -> ClassMap:
    """The class map of a COCO JSON's ``categories``, in Detectron2's contiguous order (sorted
    by id, as ``load_coco_json`` numbers them)."""
    cats = sorted(categories, key=lambda c: c["id"])
    return [{"id": int(c["id"]), "name": str(c["name"])} for c in cats]


def class_map_of_datasets(names: Sequence[str]) -> Optional[ClassMap]:
    """The class map of the registered datasets ``names`` (e.g. ``DATASETS.TRAIN``), read from
    ``MetadataCatalog``: their common ``thing_classes``, and each class's id where every
    dataset that has ids agrees on it (``None`` where they differ). ``None`` when no dataset
    has ``thing_classes``.

    Raises:
        ValueError: if two of the datasets have different ``thing_classes``.
    """
    from detectron2.data import MetadataCatalog

    result: Optional[ClassMap] = None
    first = None
    for name in names:
        meta = MetadataCatalog.get(name)
        cmap = class_map_from_metadata(meta.get("thing_classes"),
                                       meta.get("thing_dataset_id_to_contiguous_id"))
        if cmap is None:
            continue
        if result is None:
            result, first = [dict(c) for c in cmap], name
            continue
        if [c["name"] for c in cmap] != [c["name"] for c in result]:
            raise DataError(
                f"Datasets '{first}' and '{name}' have different classes:\n"
                f"  {first}: {format_class_map(result)}\n  {name}: {format_class_map(cmap)}"
            )
        for entry, other in zip(result, cmap):
            if entry["id"] is None:
                entry["id"] = other["id"]
            elif other["id"] is not None and other["id"] != entry["id"]:
                entry["id"] = None
    return result


def data_class_map(categories: Optional[Sequence[Mapping[str, Any]]],
                   test_datasets: Sequence[str],
                   categories_desc: str = "--coco-json") -> Tuple[Optional[ClassMap], str]:
    """The classes results are written for, and how messages name them: ``categories`` (a
    COCO file's, named ``categories_desc``), else those of the first of ``test_datasets``
    (the config's DATASETS.TEST) when it has any; ``(None, "")`` when there are none."""
    if categories is not None:
        return class_map_from_categories(categories), categories_desc
    if len(test_datasets):
        cmap = class_map_of_datasets(test_datasets[:1])
        if cmap is not None:
            return cmap, f"DATASETS.TEST '{test_datasets[0]}'"
    return None, ""


def training_class_map(names: Sequence[str]) -> Optional[ClassMap]:
    """:func:`class_map_of_datasets` of ``names``, loading a dataset whose metadata has no
    ``thing_classes`` yet (Detectron2's ``register_coco_instances`` sets them when the JSON is
    first read): the classes a training run on ``names`` will have."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if MetadataCatalog.get(name).get("thing_classes") is None and name in DatasetCatalog:
            DatasetCatalog.get(name)
    return class_map_of_datasets(names)


def validate_class_map(value: Any, where: str) -> ClassMap:
    """``value`` (e.g. read from a checkpoint) as a class map; ``ValueError`` naming ``where``
    if it is not a list of ``{"id": int or None, "name": str}``."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str)
        and (c.get("id") is None or isinstance(c.get("id"), int)) for c in value
    )
    if not ok:
        raise ValueError(f"{where}: 'class_map' is not a list of {{'id': int, 'name': str}} "
                         f"(found {str(value)[:200]})")
    return [{"id": c.get("id"), "name": c["name"]} for c in value]


def format_class_map(cmap: ClassMap, limit: int = 20) -> str:
    """``[3: cat, 7: dog, ...]``: the entries in contiguous order, as ``id: name``."""
    items = [f"{c['id']}: {c['name']}" if c["id"] is not None else c["name"]
             for c in cmap[:limit]]
    more = f", ... ({len(cmap)} in all)" if len(cmap) > limit else ""
    return "[" + ", ".join(items) + more + "]"


def match_class_maps(model: ClassMap, data: ClassMap, *, model_desc: str = "the model",
                     data_desc: str = "the dataset",
                     advice: str = "Evaluate on data with the model's classes, or use a model "
                                   "trained on these") -> Optional[List[int]]:
    """Match a model's classes to a dataset's by name.

    Args:
        model: the model's class map (output ``k`` is ``model[k]``).
        data: the dataset's class map, in its contiguous order (Detectron2's numbering of its
            categories).
        model_desc, data_desc: how the two are named in messages.
        advice: the fix the error ends with.

    Returns:
        ``None`` when output ``k`` already is the dataset's class ``k`` (same names in the same
        order; the ids may differ: Detectron2 writes results with the dataset's own ids), else
        ``perm`` with ``perm[k]`` the dataset's contiguous class of output ``k`` (same names,
        listed under other ids): renumber predictions with it before evaluating.

    Raises:
        ValueError: different class names (or names that do not identify a class: repeated),
        showing both lists.
    """
    model_names = [c["name"] for c in model]
    data_names = [c["name"] for c in data]
    if model_names == data_names:
        moved = [(m, d) for m, d in zip(model, data)
                 if None not in (m["id"], d["id"]) and m["id"] != d["id"]]
        if moved:
            logger.info(f"{data_desc} lists the classes of {model_desc} in the same order under "
                        f"other ids ({format_class_map(data)}); results use {data_desc}'s ids")
        return None
    unique = len(set(model_names)) == len(model_names) and \
        len(set(data_names)) == len(data_names)
    if not unique or set(model_names) != set(data_names):
        only_model = [n for n in model_names if n not in data_names]
        only_data = [n for n in data_names if n not in model_names]
        detail = (f"only in {model_desc}: {only_model}; only in {data_desc}: {only_data}"
                  if unique else "a class name appears twice, classes cannot be matched by name")
        raise DataError(
            f"The classes of {model_desc} and {data_desc} differ ({detail}):\n"
            f"  {model_desc} ({len(model)}): {format_class_map(model)}\n"
            f"  {data_desc} ({len(data)}): {format_class_map(data)}\n"
            + advice
        )
    index = {n: j for j, n in enumerate(data_names)}
    perm = [index[n] for n in model_names]
    logger.warning(
        f"{data_desc} lists the classes of {model_desc} in another order: matched by name, "
        f"results use {data_desc}'s ids.\n  {model_desc}: {format_class_map(model)}\n"
        f"  {data_desc}: {format_class_map(data)}"
    )
    return perm


def outputs_class_map(checkpoint_map: Optional[ClassMap], num_classes: int,
                      dataset_names: Sequence[str], fallback: Optional[ClassMap] = None,
                      fallback_desc: str = "", *, weights: str = "",
                      num_classes_key: str = "MODEL.RETINANET.NUM_CLASSES") -> ClassMap:
    """The classes of a model's ``num_classes`` outputs: ``checkpoint_map`` when the
    checkpoint has one. For a checkpoint without one (Detectron2's, or older), those of the
    first of ``dataset_names`` (e.g. the config's DATASETS.TEST) that has classes, else
    ``fallback`` (named ``fallback_desc``), else the numbers 0..K-1; a warning says which,
    since only the count can be checked then (a count that differs is a
    :class:`DataError` naming ``num_classes_key``)."""
    if checkpoint_map is not None:
        return checkpoint_map
    where, cmap = "", None
    if dataset_names:
        cmap, where = class_map_of_datasets(dataset_names[:1]), f"dataset '{dataset_names[0]}'"
    if cmap is None and fallback is not None:
        cmap, where = fallback, fallback_desc
    if cmap is None:
        return [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    if len(cmap) != num_classes:
        raise DataError(f"{num_classes_key}={num_classes} but {where} has {len(cmap)} classes")
    logger.warning(f"The checkpoint {weights!r} records no class map (a Detectron2 or older "
                   f"checkpoint): its outputs are taken to be the classes of {where} in their "
                   f"order {format_class_map(cmap)}")
    return cmap


def results_category_ids(model_map: ClassMap, data_map: Optional[ClassMap], data_desc: str,
                         model_desc: str, hint: str = "") -> Tuple[List[int], ClassMap]:
    """For each model output k, the category id a results file gives it, and the categories
    to list beside the results. The model's classes are matched by name with ``data_map``
    (the same names under other ids: the data's ids; other names: a :class:`DataError`
    showing both lists, then ``hint``); without ``data_map``, the model's own ids (k + 1 where
    it has none)."""
    if data_map is None:
        ids = [c["id"] if c["id"] is not None else k + 1 for k, c in enumerate(model_map)]
        return ids, [{"id": i, "name": c["name"]} for i, c in zip(ids, model_map)]
    try:
        perm = match_class_maps(model_map, data_map, model_desc=model_desc,
                                data_desc=data_desc)
    except ValueError as e:
        raise DataError(f"{e}{hint}") from None
    data_ids = [c["id"] if c["id"] is not None else j + 1 for j, c in enumerate(data_map)]
    ids = [data_ids[perm[k] if perm else k] for k in range(len(model_map))]
    return ids, [{"id": i, "name": c["name"]} for i, c in zip(data_ids, data_map)]
