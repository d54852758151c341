"""Config keys added by retina_focal, and their validation.

Only new settings live under ``MODEL.RETINA_FOCAL`` (FocalRPN's in ``MODEL.RETINA_FOCAL.RPN``);
keys Detectron2 already has (``MODEL.RETINANET.FOCAL_LOSS_ALPHA``, ``IOU_THRESHOLDS``, ...) stay
where they are, so a stock Detectron2 RetinaNet config runs with
``MODEL.META_ARCHITECTURE: "RetinaFocal"`` alone.
Values are checked where they are used, by the constructors (:mod:`.validation`).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_retina_focal_config", "MEMORY_FORMATS", "NORMALIZERS", "PAPER_BEST_LOSSES"]

# Values of MODEL.RETINA_FOCAL.NORMALIZER.
NORMALIZERS = ("ema", "batch")
# (alpha, gamma) of the paper's best focal loss (Table 1b: FL, gamma 2, alpha .25) and best
# alpha-balanced cross entropy (Table 1a: CE, gamma 0, alpha .75): what the imbalance study
# and the imbalance analysis compare
PAPER_BEST_LOSSES = {"FL": (0.25, 2.0), "CE": (0.75, 0.0)}
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def add_retina_focal_config(cfg: CN) -> None:
    """Add retina_focal's keys to a Detectron2 config, in place. Calling it twice is harmless."""
    if "RETINA_FOCAL" in cfg.MODEL:
        return
    _C = cfg
    _C.MODEL.RETINA_FOCAL = CN()
    # Head class, by name in RETINA_FOCAL_HEAD_REGISTRY.
    _C.MODEL.RETINA_FOCAL.HEAD_NAME = "RetinaFocalHead"
    # Classification loss, by name in CLS_LOSS_REGISTRY (alpha/gamma: MODEL.RETINANET.FOCAL_LOSS_*).
    _C.MODEL.RETINA_FOCAL.LOSS_NAME = "SigmoidFocalLoss"
    # Anchor assigner, by name in ASSIGNER_REGISTRY (thresholds: MODEL.RETINANET.IOU_THRESHOLDS).
    _C.MODEL.RETINA_FOCAL.ASSIGNER_NAME = "IoUThresholdMatcher"
    # Make each ground truth's highest-IoU anchors positive even below the threshold.
    _C.MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES = True
    # A best anchor in a negative band: "detectron2" makes it positive, "detectron" keeps it 0.
    _C.MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER = "detectron2"
    # Low-quality matches only for ground truths whose best anchor IoU is >= this (0: all).
    _C.MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU = 0.0
    # ATSSAssigner: candidates per level = ATSS_TOPK x anchors per location, nearest centres.
    _C.MODEL.RETINA_FOCAL.ATSS_TOPK = 9

    # Focal loss implementation: "auto" (fused kernel if it runs here), "fused" or "portable".
    _C.MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL = "auto"
    # Memory layout of conv weights and activations: "auto" (channels_last when MODEL.DEVICE is
    # the CPU, where oneDNN convolutions run faster in it), "channels_last" or "contiguous".
    _C.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "auto"
    # Compute each backbone conv + FrozenBatchNorm as one conv with the folded weight and bias
    # (same parameters and checkpoints; saves the norm's passes over the activations).
    _C.MODEL.RETINA_FOCAL.FOLD_FROZEN_BN = True
    # SOLVER.AMP.ENABLED on a CPU: "native" trains in bfloat16 only where the CPU has bfloat16
    # instructions (avx512_bf16, amx_bf16, Arm bf16) and in float32 elsewhere, where emulated
    # bfloat16 is slower; "always" trains in bfloat16 on any CPU. No effect on CUDA.
    _C.MODEL.RETINA_FOCAL.CPU_BFLOAT16 = "native"

    # --- Classification losses (see README "Losses and samplers") ---
    # Per-class alpha, K values in [0, 1] (SigmoidFocalLoss[Star]); [] = FOCAL_LOSS_ALPHA.
    _C.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS = []
    # SigmoidFocalLossStar: gamma* (> 0), the scale of the logit.
    _C.MODEL.RETINA_FOCAL.FL_STAR_GAMMA = 2.0
    # SigmoidFocalLossStar: beta, the shift of the scaled logit.
    _C.MODEL.RETINA_FOCAL.FL_STAR_BETA = 1.0
    # QualityFocalLoss: beta (>= 0), exponent of |IoU target - sigmoid(x)|.
    _C.MODEL.RETINA_FOCAL.QFL_BETA = 2.0
    # VarifocalLoss: alpha (> 0), weight of the negatives' term.
    _C.MODEL.RETINA_FOCAL.VFL_ALPHA = 0.75
    # VarifocalLoss: gamma (>= 0), exponent of p in the negatives' term.
    _C.MODEL.RETINA_FOCAL.VFL_GAMMA = 2.0

    # --- Sample selection and loss normalisation ---
    # Sampler, by name in SAMPLER_REGISTRY: AllAnchors | OHEMSampler | HardNegativeMiner.
    _C.MODEL.RETINA_FOCAL.SAMPLER_NAME = "AllAnchors"
    # OHEMSampler: anchors kept per image (the paper: 128, 256, 512).
    _C.MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE = 256
    # OHEMSampler: IoU of the NMS among anchors ranked by loss (the paper: 0.7, 0.5); 1 = off.
    _C.MODEL.RETINA_FOCAL.OHEM_NMS_THRESH = 0.7
    # OHEMSampler: fraction of the batch for positives (0.25 = 1:3); < 0 = no fixed ratio.
    _C.MODEL.RETINA_FOCAL.OHEM_FG_RATIO = -1.0
    # OHEMSampler: boxes the NMS compares, "predicted" (decoded boxes) or "anchors".
    _C.MODEL.RETINA_FOCAL.OHEM_NMS_BOXES = "predicted"
    # HardNegativeMiner: negatives kept per positive, hardest first (SSD: 3).
    _C.MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO = 3.0
    # HardNegativeMiner: minimum negatives kept per image (images without positives too).
    _C.MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES = 0
    # Loss normaliser: "ema" (Detectron2: EMA of #positive anchors) or "batch" (the paper).
    _C.MODEL.RETINA_FOCAL.NORMALIZER = "ema"

    # Training: skip (log and count) missing or corrupt image files instead of stopping.
    _C.MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES = False
    # Training: keep up to this many MiB of decoded images in each loader process, so that
    # each image file is decoded once, not once per epoch (0: off).
    _C.MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB = 0

    # --- FocalRPN (MODEL.PROPOSAL_GENERATOR.NAME "FocalRPN"): defaults = Detectron2's RPN ---
    # (the RPN's own keys, MODEL.RPN.*: IoU bands, batch size per image, NMS, ..., stay there)
    _C.MODEL.RETINA_FOCAL.RPN = CN()
    # Objectness loss, by name in CLS_LOSS_REGISTRY (one sigmoid logit per anchor):
    # SigmoidFocalLoss with alpha -1 and gamma 0 is Detectron2's binary cross entropy.
    _C.MODEL.RETINA_FOCAL.RPN.LOSS_NAME = "SigmoidFocalLoss"
    # Its alpha, in [0, 1] (weight of object anchors) or -1 (no balancing).
    _C.MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_ALPHA = -1.0
    # Its gamma, >= 0 (0: cross entropy).
    _C.MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_GAMMA = 0.0
    # Anchor assigner, by name in ASSIGNER_REGISTRY; the IoU matcher takes MODEL.RPN.IOU_*.
    _C.MODEL.RETINA_FOCAL.RPN.ASSIGNER_NAME = "IoUThresholdMatcher"
    # "detectron2": MODEL.RPN.BATCH_SIZE_PER_IMAGE anchors per image, 1:1; "all": every one.
    _C.MODEL.RETINA_FOCAL.RPN.SAMPLING = "detectron2"
    # Loss divisor: "detectron2" (BATCH_SIZE_PER_IMAGE x images), "ema" or "batch" positives.
    _C.MODEL.RETINA_FOCAL.RPN.NORMALIZER = "detectron2"
    # "ema" normaliser: momentum, in [0, 1).
    _C.MODEL.RETINA_FOCAL.RPN.NORMALIZER_MOMENTUM = 0.9
    # "ema" normaliser: starting value, > 0.
    _C.MODEL.RETINA_FOCAL.RPN.NORMALIZER_INIT = 100.0
    # Box-loss divisor: "same" (NORMALIZER's, as Detectron2's RPN) or "detectron2"
    # (BATCH_SIZE_PER_IMAGE x images whatever NORMALIZER is: the sampled RPN's box-loss scale).
    _C.MODEL.RETINA_FOCAL.RPN.BOX_NORMALIZER = "same"
    # Initial objectness pi of every anchor, in (0, 1): 0.5 = bias 0 (Detectron2's).
    _C.MODEL.RETINA_FOCAL.RPN.PRIOR_PROB = 0.5
