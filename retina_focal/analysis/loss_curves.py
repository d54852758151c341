"""The focal loss itself, as the paper plots it.

* Figure 1: ``FL(p_t) = -(1 - p_t)^gamma log(p_t)`` against the probability of the
  ground-truth class ``p_t``, for several gamma (gamma = 0 is cross entropy).
* Figure 4: run a trained model on images, label its anchors with the model's own assigner,
  and, separately for positive and negative samples, sort the samples' focal loss from lowest
  to highest, normalise it to sum to one and plot its cumulative sum against the fraction of
  samples. The model is trained once; only the gamma used to *score* the samples changes.

A sample is one binary (anchor, class) prediction of the sigmoid head: positives are the
ground-truth class at foreground anchors (``p_t = p``), negatives are every class at
background anchors (``p_t = 1 - p``); ignored anchors are left out. alpha is a constant per
group, so it cancels in the normalisation and is not used here.
"""
import json
import logging
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from retina_focal.utils.plotting import pyplot

__all__ = [
    "anchor_probabilities",
    "figure1_data",
    "figure4",
    "focal_loss_of_pt",
    "loss_cdf",
    "plot_figure1",
    "plot_figure4",
    "write_figure1",
]

# the logger of ``retina-focal plot-focal-loss`` (tests and users filter on its name)
logger = logging.getLogger("retina_focal.plot_focal_loss")


def focal_loss_of_pt(p_t: np.ndarray, gamma: float) -> np.ndarray:
    """``-(1 - p_t)^gamma * log(p_t)`` elementwise, for ``p_t`` in (0, 1] (float64)."""
    p_t = np.asarray(p_t, dtype=np.float64)
    return -np.power(1.0 - p_t, gamma) * np.log(p_t)


def figure1_data(gammas: Sequence[float], num: int = 400) -> Dict:
    """The curves of Figure 1: ``{"p_t": [num], "loss": {str(gamma): [num]}}``, ``p_t``
    evenly spaced in [0.01, 1] (the loss is infinite at 0)."""
    p_t = np.linspace(0.01, 1.0, num)
    return {"p_t": p_t.tolist(),
            "loss": {repr(float(g)): focal_loss_of_pt(p_t, g).tolist() for g in gammas}}


def plot_figure1(data: Dict, path: str) -> None:
    """Draw Figure 1 from :func:`figure1_data`'s output into the PNG ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for gamma, loss in data["loss"].items():
        ax.plot(data["p_t"], loss, label=f"gamma = {float(gamma):g}" + (
            " (CE)" if float(gamma) == 0 else ""))
    ax.axvspan(0.6, 1.0, color="tab:green", alpha=0.08, label="well-classified examples")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("probability of ground truth class (p_t)")
    ax.set_ylabel("loss")
    ax.set_title("Focal loss FL(p_t) = -(1 - p_t)^gamma log(p_t)  (Lin et al. 2017, Fig. 1)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def anchor_probabilities(model, batches: Iterable[List[Dict]]) -> Tuple[np.ndarray, np.ndarray]:
    """Predicted probabilities of the positive and negative samples of a RetinaFocal model.

    Args:
        model: a RetinaFocal (sigmoid head with K outputs per anchor), used in eval mode.
        batches: lists of Detectron2 dataset dicts mapped for the model (``image`` (3, H, W)
            and ``instances`` with ``gt_boxes`` / ``gt_classes`` in the image's frame).

    Returns:
        pos_p: (P,) float64, the probability of the ground-truth class at each foreground
            anchor.
        neg_p: (Q,) float64, the probability of every class at each background anchor
            (Q = #background anchors * K).
    """
    from detectron2.layers import cat

    was_training = model.training
    model.eval()
    K = model.num_classes
    pos, neg = [], []
    try:
        for batch in batches:
            images = model.preprocess_image(batch)
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            logits, deltas = model.head(features)
            logits, _ = model._transpose_dense_predictions([logits, deltas], [K, 4])
            probs = cat(logits, dim=1).sigmoid()  # (N, R, K)
            if probs.shape[-1] != K:
                raise ValueError(f"Figure 4 needs a sigmoid head with {K} scores per anchor, "
                                 f"got {probs.shape[-1]}")
            anchors = model.anchor_generator(features)
            gt = [x["instances"].to(model.device) for x in batch]
            labels, _ = model.label_anchors(anchors, gt)
            for p, lab in zip(probs, labels):  # (R, K), (R,)
                fg = (lab >= 0) & (lab < K)
                pos.append(p[fg, lab[fg]].double().cpu())
                neg.append(p[lab == K].flatten().double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(pos).numpy(), torch.cat(neg).numpy()


def loss_cdf(
    p_t: np.ndarray, gamma: float, num_points: int = 512
) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative normalised loss of samples with probabilities ``p_t`` (Figure 4).

    Returns:
        fraction: (num_points,) in [0, 1], the fraction of samples (sorted by loss, lowest
            first).
        cum_loss: (num_points,), the share of the total loss carried by that fraction of the
            samples (0 at 0, 1 at 1).
    """
    p_t = np.clip(np.asarray(p_t, dtype=np.float64), 1e-12, 1.0)
    if p_t.size == 0:
        raise ValueError("loss_cdf needs at least one sample")
    loss = np.sort(focal_loss_of_pt(p_t, gamma))
    cum = np.concatenate([[0.0], np.cumsum(loss)])
    total = cum[-1]
    cum = cum / total if total > 0 else np.linspace(0, 1, cum.size)
    frac = np.linspace(0.0, 1.0, cum.size)
    grid = np.linspace(0.0, 1.0, num_points)
    return grid, np.interp(grid, frac, cum)


def plot_figure4(data: Dict, path: str) -> None:
    """Draw Figure 4 (positives left, negatives right) from ``data``:
    ``{"positive"|"negative": {"num_samples": n, "fraction": [...], "cdf": {gamma: [...]}}}``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind in zip(axes, ("positive", "negative")):
        d = data[kind]
        for gamma, cdf in d["cdf"].items():
            ax.plot(d["fraction"], cdf, label=f"gamma = {float(gamma):g}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"fraction of {kind} samples ({d['num_samples']:,})")
        ax.set_ylabel("cumulative normalized loss")
        ax.set_title(f"{kind} samples", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("Cumulative distribution of the normalised focal loss (Lin et al. 2017, "
                 "Fig. 4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figure1(gammas: Sequence[float], output: str) -> str:
    """Write Figure 1 for ``gammas`` into the existing folder ``output``: ``figure1.json``
    (:func:`figure1_data`, the plotted values) and ``figure1.png``; return the PNG's path."""
    data = figure1_data(gammas)
    with open(os.path.join(output, "figure1.json"), "w") as f:
        json.dump(data, f)
    path = os.path.join(output, "figure1.png")
    plot_figure1(data, path)
    return path


def figure4(config_file: str, opts: Sequence[str], output: str, dataset: Optional[str] = None,
            num_images: int = 100, gammas: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
            allow_unsafe: bool = False) -> str:
    """Write Figure 4 of the trained model of ``config_file`` (with the ``KEY VALUE``
    overrides ``opts``, e.g. ``MODEL.WEIGHTS``) into the existing folder ``output``:
    ``figure4.json`` (the plotted values: per kind of sample, its count, the fraction axis and
    one cumulative curve per gamma of ``gammas``) and ``figure4.png``; return the PNG's path.

    The model runs on the first ``num_images`` images of the registered ``dataset`` (None: the
    config's first ``DATASETS.TEST``) at test size, its anchors labelled by its own assigner
    (:func:`anchor_probabilities`), printing its progress. ``allow_unsafe``: read Python tags
    in the config (``--allow-unsafe-config``). A missing dataset, a bad image count or an
    unreadable checkpoint is a ``ValueError`` naming it; images with no positive or no
    negative sample are one too."""
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    from retina_focal.data.datasets.coco import check_registered, load_registered
    from retina_focal.engine.checkpoint import CheckpointReadError
    from retina_focal.engine.defaults import build_cfg, build_model_and_load

    given_dataset = dataset
    cfg = build_cfg(config_file, list(opts), allow_unsafe=allow_unsafe)
    dataset = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if dataset is None:
        raise ValueError("No dataset: pass --dataset NAME or set DATASETS.TEST in the config")
    check_registered(dataset, "--dataset" if given_dataset else "DATASETS.TEST",
                     can_register=False)
    if num_images < 1:
        raise ValueError(f"--num-images={num_images} is invalid: use 1 or more")

    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: Figure 4 of a randomly initialised model")
    try:  # every tensor from the checkpoint: a model of another class count is an error
        model = build_model_and_load(cfg)
    except CheckpointReadError as e:  # truncated / corrupt: an error message like the others
        raise ValueError(str(e)) from e
    # test-time resizing, but keep the annotations (is_train=True) to label the anchors
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        image_format=cfg.INPUT.FORMAT,
    )
    dicts = load_registered(dataset, "--dataset" if given_dataset else "DATASETS.TEST")[
        :num_images]
    batch_size = 4

    def batches():
        t0 = time.time()
        for i in range(0, len(dicts), batch_size):
            yield [mapper(dict(d)) for d in dicts[i:i + batch_size]]
            done = min(i + batch_size, len(dicts))
            eta = (time.time() - t0) / done * (len(dicts) - done)
            print(f"Figure 4: {done}/{len(dicts)} images, ETA {eta:.0f} s", flush=True)

    pos_p, neg_p = anchor_probabilities(model, batches())
    if pos_p.size == 0 or neg_p.size == 0:
        raise ValueError(f"{dataset}: the first {len(dicts)} images gave {pos_p.size} positive "
                         f"and {neg_p.size} negative samples; Figure 4 needs both")
    data = {"dataset": dataset, "num_images": len(dicts), "weights": cfg.MODEL.WEIGHTS}
    for kind, p_t in (("positive", pos_p), ("negative", 1.0 - neg_p)):
        entry: Dict[str, Any] = {"num_samples": int(p_t.size), "cdf": {}}
        for g in gammas:
            entry["fraction"], cdf = loss_cdf(p_t, g)
            entry["cdf"][repr(g)] = cdf.tolist()
        entry["fraction"] = entry["fraction"].tolist()
        data[kind] = entry
    path = os.path.join(output, "figure4.png")
    with open(os.path.join(output, "figure4.json"), "w") as f:
        json.dump(data, f)
    plot_figure4(data, path)
    return path
