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
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch

from retina_focal.utils.plotting import pyplot

__all__ = [
    "anchor_probabilities",
    "figure1_data",
    "focal_loss_of_pt",
    "loss_cdf",
    "plot_figure1",
    "plot_figure4",
]


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
