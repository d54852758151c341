"""The focal-loss family of the paper: sigmoid FL (eq. 5), FL* (appendix A) and the softmax
variant with an explicit background class (the original Detectron's option)."""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from torch import Tensor, nn

from retina_focal.config import (
    check_alpha,
    check_alpha_per_class,
    check_choice,
    check_finite,
    check_focal_params,
    check_gamma,
    check_positive,
    config_values,
    configurable,
)
from retina_focal.modeling.losses.base import DenseClsLoss
from retina_focal.modeling.registry import CLS_LOSS_REGISTRY, get_component
from retina_focal.ops import sigmoid_focal_loss_labels
from retina_focal.ops.focal_loss import IMPLS, Alpha
from retina_focal.ops.numerics import to_compute_dtype, unit_pow

__all__ = [
    "SigmoidFocalLoss", "SigmoidFocalLossStar", "SoftmaxFocalLoss", "build_cls_loss",
    "cls_loss_class",
]

ALPHA_KEY = "MODEL.RETINANET.FOCAL_LOSS_ALPHA"
GAMMA_KEY = "MODEL.RETINANET.FOCAL_LOSS_GAMMA"
ALPHA_PER_CLASS_KEY = "MODEL.RETINA_FOCAL.ALPHA_PER_CLASS"


def cls_loss_class(cfg: CfgNode) -> Type[DenseClsLoss]:
    """The class named by ``MODEL.RETINA_FOCAL.LOSS_NAME`` (for its classmethod hooks)."""
    loss_class: Type[DenseClsLoss] = get_component(
        CLS_LOSS_REGISTRY, cfg.MODEL.RETINA_FOCAL.LOSS_NAME, "MODEL.RETINA_FOCAL.LOSS_NAME"
    )
    return loss_class


def build_cls_loss(cfg: CfgNode) -> nn.Module:
    """Build the loss named by ``MODEL.RETINA_FOCAL.LOSS_NAME``."""
    return cls_loss_class(cfg)(cfg)


def _check_alpha_per_class_count(cfg: CfgNode) -> None:
    """A set ``ALPHA_PER_CLASS`` must have ``NUM_CLASSES`` values (checked here: the loss
    itself does not know the class count)."""
    per_class = list(cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS)
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    if per_class and len(per_class) != num_classes:
        raise ValueError(
            f"{ALPHA_PER_CLASS_KEY} has {len(per_class)} values but MODEL.RETINANET.NUM_CLASSES="
            f"{num_classes}: give one alpha per class, or [] to use {ALPHA_KEY}"
        )


def _alpha_key(cfg: CfgNode) -> str:
    """The cfg key of the ``alpha`` argument: ``ALPHA_PER_CLASS`` if set, else the scalar
    alpha's."""
    return ALPHA_PER_CLASS_KEY if len(cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS) else ALPHA_KEY


def _reject_alpha_per_class(cfg: CfgNode, loss_name: str) -> None:
    if len(cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS):
        raise ValueError(
            f"{ALPHA_PER_CLASS_KEY}={list(cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS)} is not used "
            f"by {loss_name}: only SigmoidFocalLoss and SigmoidFocalLossStar take a per-class "
            "alpha; leave it empty ([])"
        )


class _SigmoidAlphaMixin(nn.Module):
    """A scalar alpha (float attribute, -1 = off) or a per-class one (a (K,) buffer that
    follows the module's device and is not saved in checkpoints)."""

    def _set_alpha(self, alpha: Union[float, Sequence[float]]) -> None:
        """Validate and store ``alpha``: in [0, 1] or -1, or K values in [0, 1]."""
        if isinstance(alpha, (list, tuple, Tensor)):
            values = alpha.tolist() if isinstance(alpha, Tensor) else list(alpha)
            check_alpha_per_class(values, key="alpha")
            values = [float(a) for a in values]
            self.alpha: Union[float, None] = None
            self.register_buffer(
                "alpha_per_class", torch.tensor(values, dtype=torch.float64), persistent=False
            )
        else:
            check_alpha(alpha, key="alpha")
            self.alpha = float(alpha)  # type: ignore[arg-type]  # a sequence took the branch above
            self.alpha_per_class: Optional[Tensor] = None

    def _alpha_t(self, like: Tensor, positive: bool) -> Union[Tensor, float, None]:
        """alpha_t for entries whose target is 1 (positive) or 0, broadcast over (R, K)."""
        if self.alpha_per_class is not None:
            a = self.alpha_per_class.to(like.dtype)
            if a.numel() != like.shape[-1]:
                raise ValueError(f"alpha has {a.numel()} classes, logits {like.shape[-1]}")
            return a if positive else 1 - a
        alpha = self.alpha  # a float here (None only with a per-class alpha)
        if alpha is None or alpha < 0:
            return None
        return alpha if positive else 1 - alpha

    def _alpha_repr(self) -> str:
        if self.alpha_per_class is not None:
            return f"alpha_per_class={[round(a, 4) for a in self.alpha_per_class.tolist()]}"
        return f"alpha={self.alpha}"


@CLS_LOSS_REGISTRY.register()
class SigmoidFocalLoss(_SigmoidAlphaMixin, DenseClsLoss):
    """Sigmoid focal loss over K independent binary classifiers per anchor (the paper's eq. 5).

    With p = sigmoid(x) and target t = 1 for the anchor's class, 0 for the other classes::

        p_t = p if t = 1 else 1 - p;  alpha_t = alpha_k if t = 1 else 1 - alpha_k
        FL  = -alpha_t (1 - p_t)^gamma log(p_t)

    gamma = 0 is alpha-balanced cross entropy; alpha = -1 switches alpha-balancing off.
    ``alpha_k`` is the same scalar for every class (the paper) or one value per class.
    Background anchors (label K) are negative for every class; ignored anchors (label -1)
    contribute nothing.

    Config: ``MODEL.RETINANET.FOCAL_LOSS_ALPHA``, ``MODEL.RETINANET.FOCAL_LOSS_GAMMA``,
    ``MODEL.RETINA_FOCAL.ALPHA_PER_CLASS`` (K values in [0, 1]; empty: the scalar alpha);
    ``MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL`` picks the implementation (the fused kernel by
    default, see :func:`retina_focal.ops.sigmoid_focal_loss_labels`).
    """

    @configurable
    def __init__(
        self,
        *,
        alpha: Union[float, Sequence[float]] = 0.25,
        gamma: float = 2.0,
        impl: str = "auto",
    ):
        super().__init__()
        self._set_alpha(alpha)
        check_gamma(gamma, key="gamma", note="0 gives alpha-balanced cross entropy")
        check_choice(impl, IMPLS, key="impl")
        self.gamma = float(gamma)
        self.impl = impl

    config_keys = {
        "alpha": _alpha_key,
        "gamma": GAMMA_KEY,
        "impl": "MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL",
    }

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        _check_alpha_per_class_count(cfg)
        return config_values(cfg, cls.config_keys)

    def _op_alpha(self) -> Alpha:
        if self.alpha_per_class is not None:
            return self.alpha_per_class
        assert self.alpha is not None  # a float whenever there is no per-class alpha
        return self.alpha

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        return sigmoid_focal_loss_labels(
            logits, labels, alpha=self._op_alpha(), gamma=self.gamma, reduction="none",
            impl=self.impl,
        )

    @torch.jit.unused
    def forward(self, logits: Tensor, labels: Tensor, weights: Optional[Tensor] = None,
                **targets: Tensor) -> Tensor:
        """
        Args:
            logits: (R, K) float logits.
            labels: (R,) int64 in {-1, 0..K-1, K}.
            weights: optional (R,) per-anchor weights.

        Returns:
            scalar: the loss summed over anchors and classes (not normalised).
        """
        return sigmoid_focal_loss_labels(
            logits, labels, alpha=self._op_alpha(), gamma=self.gamma, reduction="sum",
            weights=weights, impl=self.impl,
        )

    def extra_repr(self) -> str:
        return f"{self._alpha_repr()}, gamma={self.gamma}, impl={self.impl}"


def _sigmoid_targets(
    labels: Tensor, num_classes: int, values: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """(R, K) target: ``values`` (or 1) at (anchor, label) of foreground anchors, 0 elsewhere;
    and the (R,) float mask of non-ignored anchors."""
    fg = (labels >= 0) & (labels < num_classes)
    idx = torch.nonzero(fg).squeeze(1)
    dtype = values.dtype if values is not None else torch.float32
    target = torch.zeros(labels.shape[0], num_classes, dtype=dtype, device=labels.device)
    target[idx, labels[idx]] = values[idx] if values is not None else 1.0
    return target, (labels >= 0)


@CLS_LOSS_REGISTRY.register()
class SigmoidFocalLossStar(_SigmoidAlphaMixin, DenseClsLoss):
    """FL*, the paper's appendix A: focusing by a scaled and shifted logit instead of a factor.

    With y = +1 for the anchor's class and -1 for the other classes (x_t = y x)::

        p*_t = sigmoid(gamma* x_t + beta)
        FL*  = -alpha_t log(p*_t) / gamma*

    with alpha_t as in :class:`SigmoidFocalLoss` (alpha = -1: no balancing). With beta = 0 it
    is fvcore's ``sigmoid_focal_loss_star(alpha, gamma=gamma*)``.

    Config: ``MODEL.RETINA_FOCAL.FL_STAR_GAMMA`` (> 0), ``MODEL.RETINA_FOCAL.FL_STAR_BETA``,
    alpha from ``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` or ``MODEL.RETINA_FOCAL.ALPHA_PER_CLASS``.
    """

    @configurable
    def __init__(
        self, *, alpha: Union[float, Sequence[float]] = 0.25, gamma: float = 2.0, beta: float = 1.0
    ):
        super().__init__()
        self._set_alpha(alpha)
        check_positive(gamma, key="gamma", note="FL* divides by it")
        check_finite(beta, key="beta")
        self.gamma = float(gamma)
        self.beta = float(beta)

    config_keys = {
        "alpha": _alpha_key,
        "gamma": "MODEL.RETINA_FOCAL.FL_STAR_GAMMA",
        "beta": "MODEL.RETINA_FOCAL.FL_STAR_BETA",
    }

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        _check_alpha_per_class_count(cfg)
        return config_values(cfg, cls.config_keys)

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        self._check_inputs(logits, labels, logits.shape[1])
        x = to_compute_dtype(logits)
        target, valid = _sigmoid_targets(labels, x.shape[1])
        target = target.to(x.dtype)
        sign = 2 * target - 1  # y in {-1, +1}
        loss = F.softplus(-(self.gamma * sign * x + self.beta)) / self.gamma  # -log(p*_t)/g
        a_pos, a_neg = self._alpha_t(x, True), self._alpha_t(x, False)
        if a_pos is not None and a_neg is not None:  # both None without alpha-balancing
            loss = loss * (a_pos * target + a_neg * (1 - target))
        return loss * valid.to(x.dtype)[:, None]

    def extra_repr(self) -> str:
        return f"{self._alpha_repr()}, gamma*={self.gamma}, beta={self.beta}"


@CLS_LOSS_REGISTRY.register()
class SoftmaxFocalLoss(DenseClsLoss):
    """Softmax focal loss over K + 1 classes, the last one (index K) being background.

    The head predicts C = K + 1 logits per anchor. With p = softmax(x) and t the anchor's
    label (K for background)::

        p_t = p[t];  alpha_t = alpha if t < K else 1 - alpha   (alpha = -1: alpha_t = 1)
        FL  = -alpha_t (1 - p_t)^gamma log(p_t)

    one term per anchor (not per class); ignored anchors contribute nothing. At inference the
    score of class k < K is p[k] (the background column is dropped). The head's class biases
    start at 0 for the K foreground logits and log(K (1 - pi) / pi) for background, so that the
    total foreground probability of every anchor starts at pi (``MODEL.RETINANET.PRIOR_PROB``).

    Config: ``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` (scalar only) and ``FOCAL_LOSS_GAMMA``.
    """

    score_activation = "softmax"

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        check_focal_params(alpha, gamma, alpha_key="alpha", gamma_key="gamma")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    config_keys = {"alpha": ALPHA_KEY, "gamma": GAMMA_KEY}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        _reject_alpha_per_class(cfg, cls.__name__)
        return config_values(cfg, cls.config_keys)

    @classmethod
    def num_logits(cls, num_classes: int) -> int:
        return num_classes + 1

    @classmethod
    def prior_logit_bias(cls, num_classes: int, prior_prob: float) -> List[float]:
        """Foreground 0, background b: P(background) = e^b / (e^b + K) = 1 - pi."""
        return [0.0] * num_classes + [math.log(num_classes * (1 - prior_prob) / prior_prob)]

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        """(R, 1): one loss per anchor."""
        self._check_inputs(logits, labels, logits.shape[1])
        x = to_compute_dtype(logits)
        num_classes = x.shape[1] - 1
        valid = labels >= 0
        ce = F.cross_entropy(x, labels.clamp(min=0), reduction="none")  # -log(p_t)
        loss = ce
        if self.gamma != 0:
            loss = loss * unit_pow(-torch.expm1(-ce), self.gamma)  # (1 - p_t)^gamma, accurate
        if self.alpha >= 0:
            fg = labels < num_classes
            loss = loss * torch.where(fg, self.alpha, 1 - self.alpha).to(x.dtype)
        return (loss * valid.to(x.dtype))[:, None]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, classes=K+1 (background last)"
