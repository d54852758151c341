"""The focal-loss paper's ablations as data: named studies and named training schedules (the
files an ablation writes are :mod:`.results`'s, its runs :mod:`.runner`'s).

A *study* is an ordered list of settings; a *setting* is a label plus the config overrides
that define it (``KEY VALUE`` pairs, as on ``retina-focal train``'s command line) and, where
the paper has one, the paper's COCO AP for it (Lin et al., *Focal Loss for Dense Object
Detection*, ICCV 2017, Table 1 and Table 3; ResNet-50-FPN at 600 px except Table 1d, which
uses ResNet-101-FPN). An override value may be a function of the base config (the anchor
study derives its anchor sizes from the base config's smallest anchor per level).

A *schedule* is the solver overrides that set how long each setting trains.
``retina-focal ablate`` (``tools/ablate.py``) runs a study: one training run per setting, each
in its own output directory.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from retina_focal.config.defaults import PAPER_BEST_LOSSES
from retina_focal.data import IMBALANCE_PRESETS

__all__ = [
    "PAPER_TABLE_1E",
    "IMBALANCE_LEVELS",
    "IMBALANCE_LOSSES",
    "SCHEDULES",
    "STUDIES",
    "Claim",
    "Schedule",
    "Setting",
    "Study",
    "get_schedule",
    "get_study",
    "resolve_overrides",
]

OverrideValue = Union[Any, Callable[[Any], Any]]


@dataclass(frozen=True)
class Setting:
    """One row of a study: ``overrides`` are ``(KEY, value)`` pairs applied to the base config
    (after the schedule); a value may be a callable ``cfg -> value`` of the base config."""

    label: str
    overrides: Tuple[Tuple[str, OverrideValue], ...]
    paper_ap: Optional[float] = None  # the paper's COCO AP for this setting, if it has one
    # a timed study's: the paper's inference time (ms per image) beside ``paper_ap``, and the
    # (line, point) of the speed/accuracy plot this setting is, e.g. ("R50", "256")
    paper_ms: Optional[float] = None
    curve: Optional[Tuple[str, str]] = None


@dataclass(frozen=True)
class Claim:
    """One of the paper's orderings, between two settings of a study: ``better`` scores higher
    than ``worse`` (``relation`` "beats"), or the two score the same ("ties"). Its verdict
    is read from the runs' spread over seeds (:func:`retina_focal.ablation.results.verdict`)."""

    text: str
    better: str  # a setting's label
    worse: str
    relation: str = "beats"

    def __post_init__(self):
        if self.relation not in ("beats", "ties"):
            raise ValueError(f"Claim.relation={self.relation!r}: use 'beats' or 'ties'")


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    settings: Tuple[Setting, ...]
    # what the paper's numbers are (model, data), printed under the table
    paper_note: str = ""
    # the evaluation read from each run (results.TASK_METRICS): "bbox" (box AP) or
    # "box_proposals" (a ProposalNetwork's proposal recall, AR@100 / AR@1000 by size)
    task: str = "bbox"
    # whether each run's inference time per image is read from its log (results.md column,
    # speed_accuracy.png); a run without it then fails
    timed: bool = False
    # a timed study's paper curves for the plot's second panel: (line, point, AP, ms)
    paper_speed: Tuple[Tuple[str, str, float, float], ...] = ()
    # the paper's orderings this study tests, each judged in results.md from the seeds' spread
    claims: Tuple[Claim, ...] = ()
    # whether results.md compares each setting with the best one (not where the settings
    # train on different datasets, as in the imbalance study)
    compare_to_best: bool = True
    # the model whose keys the settings set: "RetinaFocal" (MODEL.META_ARCHITECTURE) or
    # "FocalRPN" (MODEL.PROPOSAL_GENERATOR.NAME); a base config of another model would train
    # the same model in every setting (:func:`check_study_model`)
    model: str = "RetinaFocal"

    def __post_init__(self):
        for claim in self.claims:
            for label in (claim.better, claim.worse):
                if label not in self.labels():
                    raise ValueError(f"Study {self.name}: claim {claim.text!r} names "
                                     f"{label!r}, which is not one of its settings")

    def labels(self) -> List[str]:
        return [s.label for s in self.settings]


@dataclass(frozen=True)
class Schedule:
    name: str
    description: str
    overrides: Tuple[Tuple[str, Any], ...] = field(default_factory=tuple)


def check_study_model(study: Study, cfg: Any, label: str, config_file: str,
                      overridden: Sequence[str] = ()) -> None:
    """Refuse (ValueError) a setting's config ``cfg`` whose model does not read the keys the
    study's settings set (:attr:`Study.model`): every setting would train the same model, and
    the study would compare identical runs. ``overridden``: the keys the command line
    overrides (a model chosen there is named as the cause)."""
    arch, proposals = cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if study.model == "RetinaFocal" and arch != "RetinaFocal":
        found, keys, wanted = f"MODEL.META_ARCHITECTURE {arch!r}", ["MODEL.META_ARCHITECTURE"], (
            "a RetinaFocal config, e.g. configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml")
    elif study.model == "FocalRPN" and proposals != "FocalRPN":
        found = (f"MODEL.META_ARCHITECTURE {arch!r} with MODEL.PROPOSAL_GENERATOR.NAME "
                 f"{proposals!r}")
        keys = ["MODEL.META_ARCHITECTURE", "MODEL.PROPOSAL_GENERATOR.NAME"]
        wanted = ("a FocalRPN config, e.g. configs/Synthetic/"
                  "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
    else:
        return
    culprits = [key for key in keys if key in overridden]
    fix = (f"leave the override of {' and '.join(culprits)} out" if culprits else f"use {wanted}")
    source = "the command line's override" if culprits else config_file
    raise ValueError(f"study {study.name} varies {study.model}'s settings, but the config of "
                     f"setting {label!r} has {found} (from {source}): another model ignores "
                     f"some of the keys its settings set, and the study would compare runs "
                     f"that differ less than their labels say; {fix}")


def _focal(alpha: float, gamma: float) -> Tuple[Tuple[str, Any], ...]:
    return (("MODEL.RETINANET.FOCAL_LOSS_ALPHA", alpha),
            ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", gamma))


def _anchor_overrides(num_scales: int, num_ratios: int) -> Tuple[Tuple[str, OverrideValue], ...]:
    """The paper's anchors: per level, ``num_scales`` octave scales 2^(i/num_scales) of the level's
    base size (the base config's smallest anchor of that level), and aspect ratios {1} or
    {1:2, 1:1, 2:1}."""

    def sizes(cfg):
        base = [float(level[0]) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
        return [[b * 2 ** (i / num_scales) for i in range(num_scales)] for b in base]

    ratios = [[1.0]] if num_ratios == 1 else [[0.5, 1.0, 2.0]]
    return (("MODEL.ANCHOR_GENERATOR.SIZES", sizes),
            ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", ratios))


# OHEM and hard-negative mining train with plain cross entropy (gamma 0, no alpha-balancing),
# as the paper's OHEM baselines.
_CE = _focal(-1.0, 0.0)


def _ohem(batch: int, nms: float, ratio: bool) -> Tuple[Tuple[str, Any], ...]:
    return _CE + (
        ("MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler"),
        ("MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE", batch),
        ("MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", nms),
        # 1:3 = a quarter of the batch for positives; -1 = no fixed ratio
        ("MODEL.RETINA_FOCAL.OHEM_FG_RATIO", 0.25 if ratio else -1.0),
    )


def _iou_bands(thresholds: List[float]) -> Tuple[Tuple[str, Any], ...]:
    """Negative below the first threshold, ignored between, positive from the last."""
    return (("MODEL.RETINANET.IOU_THRESHOLDS", thresholds),
            ("MODEL.RETINANET.IOU_LABELS", [0, -1, 1]))


def _focal_rpn(loss: Tuple[float, float], sampling: str, normalizer: str,
               prior: float, box_normalizer: str = "same") -> Tuple[Tuple[str, Any], ...]:
    """FocalRPN's objectness loss ``(alpha, gamma)``, sampling, normaliser and prior, all
    set (the base config's values are not assumed), and the box loss's normaliser where it is
    not the objectness loss's."""
    alpha, gamma = loss
    box = (() if box_normalizer == "same" else
           (("MODEL.RETINA_FOCAL.RPN.BOX_NORMALIZER", box_normalizer),))
    return (("MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_ALPHA", alpha),
            ("MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_GAMMA", gamma),
            ("MODEL.RETINA_FOCAL.RPN.SAMPLING", sampling),
            ("MODEL.RETINA_FOCAL.RPN.NORMALIZER", normalizer),
            ("MODEL.RETINA_FOCAL.RPN.PRIOR_PROB", prior)) + box


# Issue 17: Detectron2's RPN (BCE on 256 sampled anchors) against the focal loss replacing the
# sampling (all anchors, prior 0.01, the EMA of the positives as normaliser) or bolted onto it;
# alpha-balanced CE on all anchors (alpha .75, Table 1a's best); gamma with Table 1b's alpha.
_FOCAL_RPN_SETTINGS = (
    Setting("BCE + sampler (Detectron2)",
            _focal_rpn((-1.0, 0.0), "detectron2", "detectron2", 0.5)),
    Setting("FL all anchors prior .01", _focal_rpn((0.25, 2.0), "all", "ema", 0.01)),
    Setting("FL + sampler", _focal_rpn((0.25, 2.0), "detectron2", "detectron2", 0.5)),
    Setting("alpha-CE all anchors", _focal_rpn((0.75, 0.0), "all", "ema", 0.01)),
    Setting("FL gamma=0.5 alpha=.5 all anchors", _focal_rpn((0.5, 0.5), "all", "ema", 0.01)),
    Setting("FL gamma=1 alpha=.25 all anchors", _focal_rpn((0.25, 1.0), "all", "ema", 0.01)),
    # issue 27 (5): the box loss at the sampled RPN's scale (divided by 256 x images, not by
    # the positives' EMA), the tested fix of the divergence on all anchors
    Setting("FL all anchors prior .01 sampled box loss", _focal_rpn(
        (0.25, 2.0), "all", "ema", 0.01, box_normalizer="detectron2")),
)
_FOCAL_RPN_NOTE = (
    "No paper numbers: published evidence is mixed (YOLOv3: focal objectness about -2 mAP; "
    "CenterNet2: a focal dense proposal stage helps). Base config: "
    "configs/Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml (docs/focal_rpn.md).")

_TABLE1_NOTE = ("Paper: Lin et al. 2017, Table 1, RetinaNet ResNet-50-FPN, 600 px, COCO "
                "minival (trainval35k, 90k iterations).")

# Lin et al. 2017, Table 1e (and Figure 2): RetinaNet, (depth, scale in px, COCO test-dev AP,
# inference ms per image on an Nvidia M40 GPU).
PAPER_TABLE_1E = (
    (50, 400, 30.5, 64), (50, 500, 32.5, 72), (50, 600, 34.3, 98), (50, 700, 35.1, 121),
    (50, 800, 35.7, 153),
    (101, 400, 31.9, 81), (101, 500, 34.4, 90), (101, 600, 36.0, 122), (101, 700, 37.1, 154),
    (101, 800, 37.8, 198),
)
# Table 1e's depths and scales here: 0.75x, 1x and 1.25x the synthetic images' 256 px (the
# paper's 400 / 600 / 800 px are 0.67x, 1x and 1.33x its 600 px ablation scale), multiples of
# the FPN's 32 px size divisibility; each of our scales -> the paper's row beside it (R50 only).
_TABLE_1E_DEPTHS = (18, 34, 50)
_TABLE_1E_SCALES = {192: 400, 256: 600, 320: 800}


def _backbone(depth: int) -> Tuple[Tuple[str, OverrideValue], ...]:
    """A ResNet-``depth``-FPN (P3-P7) as wide as the base config's: with w its
    ``STEM_OUT_CHANNELS``, R18/R34 are BasicBlock ResNets of res2 width w (this package's
    width-configurable builder: Detectron2's fixes 64), R50 is Detectron2's bottleneck ResNet
    with bottleneck width w and res2 output 4w (w = 64 is the standard R50; the synthetic
    config's 32 halves every layer, as its R18 halves R18). Norm, freezing and FPN width are
    the base config's."""
    def stem(cfg):
        return cfg.MODEL.RESNETS.STEM_OUT_CHANNELS

    if depth in (18, 34):
        return (("MODEL.BACKBONE.NAME", "build_retina_focal_basic_resnet_fpn_backbone"),
                ("MODEL.RESNETS.DEPTH", depth), ("MODEL.RESNETS.RES2_OUT_CHANNELS", stem))
    return (("MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone"),
            ("MODEL.RESNETS.DEPTH", depth), ("MODEL.RESNETS.NUM_GROUPS", 1),
            ("MODEL.RESNETS.WIDTH_PER_GROUP", stem),
            ("MODEL.RESNETS.RES2_OUT_CHANNELS", lambda cfg: 4 * stem(cfg)))


def _scale(size: int) -> Tuple[Tuple[str, Any], ...]:
    """Train and test with the shorter side resized to ``size`` px (the longer side capped at
    ``size`` too: the synthetic images are square)."""
    return (("INPUT.MIN_SIZE_TRAIN", (size,)), ("INPUT.MAX_SIZE_TRAIN", size),
            ("INPUT.MIN_SIZE_TEST", size), ("INPUT.MAX_SIZE_TEST", size))


def _table_1e_setting(depth: int, size: int) -> Setting:
    """Setting ``R<depth>-<size>``; the paper's AP and ms where it has the depth."""
    paper = {(d, s): (ap, float(ms)) for d, s, ap, ms in PAPER_TABLE_1E}.get(
        (depth, _TABLE_1E_SCALES[size]), (None, None))
    return Setting(f"R{depth}-{size}", _backbone(depth) + _scale(size), paper[0],
                   paper_ms=paper[1], curve=(f"R{depth}", str(size)))


# The imbalance study's levels: the registered synthetic presets (retina_focal.data
# .IMBALANCE_PRESETS), from the default to beyond COCO's negatives per positive anchor. Every
# level sets its preset's datasets, the default's too; on the synthetic config the default
# level's runs are Table 3's CE and FL runs (the same resolved config: reused on resume).
IMBALANCE_LEVELS = tuple(IMBALANCE_PRESETS)
# the two losses the imbalance study compares: Table 1a's best CE and Table 1b's best FL
IMBALANCE_LOSSES = tuple((name, _focal(*PAPER_BEST_LOSSES[name])) for name in ("FL", "CE"))


def _dataset(prefix: str) -> Tuple[Tuple[str, Any], ...]:
    """Train on ``<prefix>_train`` and evaluate on ``<prefix>_val``, the default preset too:
    a level is tabled under its preset's name, so it trains on it whatever the base config's
    datasets (on the synthetic config the default level's runs are Table 3's CE and FL runs
    all the same: a run's key is its resolved config)."""
    return (("DATASETS.TRAIN", (f"{prefix}_train",)), ("DATASETS.TEST", (f"{prefix}_val",)))


STUDIES: Dict[str, Study] = {
    s.name: s
    for s in [
        Study(
            "1a", "Table 1a: alpha-balanced CE (gamma = 0), varying alpha",
            tuple(Setting(f"alpha={a}", _focal(a, 0.0), ap) for a, ap in [
                (0.10, 0.0), (0.25, 10.8), (0.50, 30.2), (0.75, 31.1), (0.90, 30.8),
                (0.99, 28.7), (0.999, 25.1)]),
            _TABLE1_NOTE,
            claims=tuple(Claim(f"CE: alpha .75 beats alpha {a}", "alpha=0.75", f"alpha={a}")
                         for a in (0.25, 0.5, 0.99)),
        ),
        Study(
            "1b", "Table 1b: focal loss, varying gamma (with its best alpha)",
            tuple(Setting(f"gamma={g} alpha={a}", _focal(a, g), ap) for g, a, ap in [
                (0.0, 0.75, 31.1), (0.1, 0.75, 31.4), (0.2, 0.75, 31.9), (0.5, 0.50, 32.9),
                (1.0, 0.25, 33.7), (2.0, 0.25, 34.0), (5.0, 0.25, 32.2)]),
            _TABLE1_NOTE,
            claims=(
                Claim("FL (gamma 2) beats CE (gamma 0)", "gamma=2.0 alpha=0.25",
                      "gamma=0.0 alpha=0.75"),
                Claim("gamma 2 beats gamma 1", "gamma=2.0 alpha=0.25", "gamma=1.0 alpha=0.25"),
                Claim("gamma 2 beats gamma 5", "gamma=2.0 alpha=0.25", "gamma=5.0 alpha=0.25"),
            ),
        ),
        Study(
            "1c", "Table 1c: anchor scales x aspect ratios per FPN level (FL, gamma 2, alpha .25)",
            tuple(Setting(f"{sc} scale x {ar} ratio", _anchor_overrides(sc, ar), ap)
                  for sc, ar, ap in [(1, 1, 30.3), (2, 1, 31.9), (3, 1, 31.8), (1, 3, 32.4),
                                     (2, 3, 34.2), (3, 3, 34.0), (4, 3, 33.8)]),
            _TABLE1_NOTE,
            claims=(
                Claim("9 anchors (3 scales x 3 ratios) beat 1", "3 scale x 3 ratio",
                      "1 scale x 1 ratio"),
                Claim("2 scales beat 1 (1 ratio)", "2 scale x 1 ratio", "1 scale x 1 ratio"),
                Claim("3 ratios beat 1 (1 scale)", "1 scale x 3 ratio", "1 scale x 1 ratio"),
                Claim("3 scales beat 1 (3 ratios)", "3 scale x 3 ratio", "1 scale x 3 ratio"),
                Claim("beyond 9 anchors nothing is gained (4 x 3 ties 3 x 3)",
                      "4 scale x 3 ratio", "3 scale x 3 ratio", relation="ties"),
            ),
        ),
        Study(
            "1d", "Table 1d: focal loss vs OHEM (CE) vs 1:3 hard-negative mining (CE)",
            tuple(
                [Setting(f"OHEM {b} nms {n}", _ohem(b, n, False), ap) for b, n, ap in [
                    (128, 0.7, 31.1), (256, 0.7, 31.8), (512, 0.7, 30.6),
                    (128, 0.5, 32.8), (256, 0.5, 31.0), (512, 0.5, 27.6)]]
                + [Setting(f"OHEM 1:3 {b} nms 0.5", _ohem(b, 0.5, True), ap) for b, ap in [
                    (128, 31.1), (256, 28.3), (512, 24.0)]]
                + [Setting("HNM 1:3", _CE + (
                    ("MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner"),
                    ("MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO", 3.0))),
                   Setting("FL gamma=2 alpha=.25", _focal(0.25, 2.0), 36.0)]
            ),
            "Paper: Lin et al. 2017, Table 1d, ResNet-101-FPN, COCO minival. The paper has no "
            "SSD-style hard-negative-mining row (its 'OHEM 1:3' rows keep NMS).",
            claims=(
                Claim("FL beats OHEM (its best, 128 nms 0.5)", "FL gamma=2 alpha=.25",
                      "OHEM 128 nms 0.5"),
                Claim("OHEM beats OHEM 1:3", "OHEM 128 nms 0.5", "OHEM 1:3 128 nms 0.5"),
                Claim("OHEM beats SSD-style 3:1 mining", "OHEM 128 nms 0.5", "HNM 1:3"),
            ),
        ),
        Study(
            "1e", "Table 1e: backbone depth x image scale",
            tuple(_table_1e_setting(d, s) for d in _TABLE_1E_DEPTHS for s in _TABLE_1E_SCALES),
            "Paper: Lin et al. 2017, Table 1e / Figure 2, RetinaNet ResNet-50/101-FPN at "
            "400-800 px, COCO test-dev AP, ms per image on an Nvidia M40 GPU. It has no R18 or "
            "R34 rows ('-'); beside our R50 at 192 / 256 / 320 px are its R50 at 400 / 600 / "
            "800 px (0.67x / 1x / 1.33x its ablation scale; ours are 0.75x / 1x / 1.25x the "
            "synthetic dataset's 256 px images). Our times: Detectron2's pure compute time "
            "per image (batch 1) of the run's final evaluation, on its own device; never "
            "compare them with the paper's in ms.",
            timed=True,
            # the paper's trends (Table 1e, Figure 2: R101 over R50 at each scale, larger
            # images better at each depth), at the images' own scale and for R18
            claims=(
                Claim("deeper is better: R34 beats R18 (256 px)", "R34-256", "R18-256"),
                Claim("deeper is better: R50 beats R34 (256 px)", "R50-256", "R34-256"),
                Claim("larger images are better: 256 beats 192 px (R18)", "R18-256",
                      "R18-192"),
                Claim("larger images are better: 320 beats 256 px (R18)", "R18-320",
                      "R18-256"),
            ),
            paper_speed=tuple((f"R{d}", str(s), ap, float(ms))
                              for d, s, ap, ms in PAPER_TABLE_1E),
        ),
        Study(
            "table3", "Table 3: CE vs FL vs FL* (appendix)",
            (
                Setting("CE alpha=.75", _focal(0.75, 0.0), 31.1),
                Setting("FL gamma=2 alpha=.25", _focal(0.25, 2.0), 34.0),
                Setting("FL* gamma*=2 beta=1", (
                    ("MODEL.RETINA_FOCAL.LOSS_NAME", "SigmoidFocalLossStar"),
                    ("MODEL.RETINA_FOCAL.FL_STAR_GAMMA", 2.0),
                    ("MODEL.RETINA_FOCAL.FL_STAR_BETA", 1.0)), 33.8),
                Setting("FL* gamma*=4 beta=0", (
                    ("MODEL.RETINA_FOCAL.LOSS_NAME", "SigmoidFocalLossStar"),
                    ("MODEL.RETINA_FOCAL.FL_STAR_GAMMA", 4.0),
                    ("MODEL.RETINA_FOCAL.FL_STAR_BETA", 0.0)), 33.9),
            ),
            "Paper: Lin et al. 2017, Table 3 (appendix), ResNet-50-FPN, 600 px, COCO minival.",
            claims=(
                Claim("FL beats CE", "FL gamma=2 alpha=.25", "CE alpha=.75"),
                Claim("FL* (2, 1) beats CE", "FL* gamma*=2 beta=1", "CE alpha=.75"),
                Claim("FL and FL* (2, 1) are equal", "FL gamma=2 alpha=.25",
                      "FL* gamma*=2 beta=1", "ties"),
            ),
        ),
        Study(
            "imbalance", "Foreground-background imbalance: FL (gamma 2, alpha .25) vs CE "
            "(alpha .75) on the imbalance presets",
            tuple(Setting(f"{prefix} {name}", _dataset(prefix) + loss)
                  for prefix in IMBALANCE_LEVELS for name, loss in IMBALANCE_LOSSES),
            "No paper numbers: the paper compares the losses on COCO only. The presets' "
            "negatives per positive anchor are in docs/datasets.md.",
            claims=tuple(Claim(f"FL beats CE on {prefix}", f"{prefix} FL", f"{prefix} CE")
                         for prefix in IMBALANCE_LEVELS),
            compare_to_best=False,
        ),
        Study(
            "assigners", "Anchor assignment: IoU bands, low-quality matches, ATSS "
            "(FL, gamma 2, alpha .25)",
            (
                Setting("IoU [0.4, 0.5]", _focal(0.25, 2.0)),
                Setting("IoU [0.5, 0.5]", _focal(0.25, 2.0) + _iou_bands([0.5, 0.5])),
                Setting("IoU [0.3, 0.7]", _focal(0.25, 2.0) + _iou_bands([0.3, 0.7])),
                Setting("low-quality off", _focal(0.25, 2.0) + (
                    ("MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES", False),)),
                Setting("Detectron order", _focal(0.25, 2.0) + (
                    ("MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER", "detectron"),)),
                Setting("ATSS top-9", _focal(0.25, 2.0) + (
                    ("MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner"),
                    ("MODEL.RETINA_FOCAL.ATSS_TOPK", 9))),
            ),
            "The paper fixes IoU bands [0.4, 0.5] with low-quality matches; it has no numbers "
            "for the others (ATSS: Zhang et al., CVPR 2020).",
            # ATSS's paper: its assignment beats RetinaNet's IoU bands (COCO, Table 5 there)
            claims=(Claim("ATSS beats the IoU bands [0.4, 0.5] (Zhang et al.)", "ATSS top-9",
                          "IoU [0.4, 0.5]"),),
        ),
        Study(
            "extra_losses", "Losses beyond the paper: softmax FL, QFL (GFL), VFL",
            (
                Setting("sigmoid FL gamma=2 alpha=.25", _focal(0.25, 2.0)),
                Setting("softmax FL gamma=2 alpha=.25", _focal(0.25, 2.0) + (
                    ("MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss"),)),
                Setting("QFL beta=2", (("MODEL.RETINA_FOCAL.LOSS_NAME", "QualityFocalLoss"),
                                       ("MODEL.RETINA_FOCAL.QFL_BETA", 2.0))),
                Setting("VFL gamma=2 alpha=.75", (
                    ("MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss"),
                    ("MODEL.RETINA_FOCAL.VFL_ALPHA", 0.75), ("MODEL.RETINA_FOCAL.VFL_GAMMA", 2.0))),
            ),
            "The paper has no numbers for these losses.",
        ),
        Study(
            "focal_rpn_proposals", "Focal RPN, the RPN alone (ProposalNetwork): proposal "
            "recall",
            tuple(Setting(s.label, s.overrides + (
                ("MODEL.META_ARCHITECTURE", "ProposalNetwork"),
                ("MODEL.RPN.POST_NMS_TOPK_TEST", 1000),  # for AR@1000
            )) for s in _FOCAL_RPN_SETTINGS),
            _FOCAL_RPN_NOTE,
            task="box_proposals",
            model="FocalRPN",
        ),
        Study(
            "focal_rpn_detector", "Focal RPN in Faster R-CNN: box AP",
            _FOCAL_RPN_SETTINGS,
            _FOCAL_RPN_NOTE,
            model="FocalRPN",
        ),
    ]
}


def _study_solver(lr: float, images: int = 8, iterations: int = 1150, warmup: int = 200,
                  steps: Tuple[int, int] = (900, 1075)) -> Tuple[Tuple[str, Any], ...]:
    """A study schedule's solver keys (cpu_study's by default); each float32 twin differs from
    its bfloat16 schedule only in LR and precision."""
    return (("SOLVER.IMS_PER_BATCH", images), ("SOLVER.BASE_LR", lr),
            ("SOLVER.MAX_ITER", iterations), ("SOLVER.WARMUP_ITERS", warmup),
            ("SOLVER.STEPS", steps), ("SOLVER.CHECKPOINT_PERIOD", 100000),
            ("TEST.EVAL_PERIOD", 0))


def _fast_solver(lr: float) -> Tuple[Tuple[str, Any], ...]:
    """cpu_fast's solver keys at learning rate ``lr``."""
    return _study_solver(lr, images=4, iterations=1700, steps=(1400, 1600))


SCHEDULES: Dict[str, Schedule] = {
    s.name: s
    for s in [
        Schedule("tiny", "2 iterations, for tests and smoke runs", (
            ("SOLVER.MAX_ITER", 2), ("SOLVER.WARMUP_ITERS", 1), ("SOLVER.STEPS", ()),
            ("SOLVER.CHECKPOINT_PERIOD", 100000), ("TEST.EVAL_PERIOD", 0))),
        Schedule("cpu_short", "a smoke test, too short to rank settings (on the synthetic "
                 "RetinaFocal config every setting scores 1-4 AP): 300 iterations of 4 images "
                 "(one epoch of the 1200-image synthetic train split; LR 0.01, warm-up 50, x0.1 "
                 "at 240 and 285): ~1.5 min per setting on 2 idle CPU cores with the synthetic "
                 "config; float32", (
                     ("SOLVER.AMP.ENABLED", False),
                     ("SOLVER.IMS_PER_BATCH", 4), ("SOLVER.BASE_LR", 0.01),
                     ("SOLVER.MAX_ITER", 300), ("SOLVER.WARMUP_ITERS", 50),
                     ("SOLVER.STEPS", (240, 285)), ("SOLVER.CHECKPOINT_PERIOD", 100000),
                     ("TEST.EVAL_PERIOD", 0))),
        Schedule("cpu_medium", "750 iterations of 4 images (2.5 epochs of the 1200-image "
                 "synthetic train split; LR 0.02, warm-up 100, x0.1 at 600 and 710): 2.5x "
                 "cpu_short's images, for studies whose AP must rise above cpu_short's "
                 "(e.g. 1e); float32", (
                     ("SOLVER.AMP.ENABLED", False),
                     ("SOLVER.IMS_PER_BATCH", 4), ("SOLVER.BASE_LR", 0.02),
                     ("SOLVER.MAX_ITER", 750), ("SOLVER.WARMUP_ITERS", 100),
                     ("SOLVER.STEPS", (600, 710)), ("SOLVER.CHECKPOINT_PERIOD", 100000),
                     ("TEST.EVAL_PERIOD", 0))),
        Schedule("cpu", "1700 iterations of 8 images in float32, LR 0.02, x0.1 at 1300 and "
                 "1550 (the synthetic config's schedule before bfloat16): ~8 min per setting "
                 "on 2 CPU cores", (
                     ("SOLVER.AMP.ENABLED", False),
                     ("SOLVER.IMS_PER_BATCH", 8), ("SOLVER.BASE_LR", 0.02),
                     ("SOLVER.MAX_ITER", 1700), ("SOLVER.WARMUP_ITERS", 200),
                     ("SOLVER.STEPS", (1300, 1550)), ("SOLVER.CHECKPOINT_PERIOD", 100000),
                     ("TEST.EVAL_PERIOD", 0))),
        Schedule("cpu_fast", "the default schedule of the studies: 1700 iterations of 4 "
                 "images (5.7 epochs of the 1200-image synthetic train split) in bfloat16 where "
                 "the CPU has it (the synthetic config's SOLVER.AMP), LR 0.08, warm-up 200, "
                 "x0.1 at 1400 and 1600: about 3.5-4 min per setting on 2 CPU cores",
                 _fast_solver(0.08)),
        Schedule("cpu_fast_fp32", "cpu_fast's float32 twin, for a CPU without bfloat16 "
                 "instructions: the same 1700 iterations of 4 images in float32 at LR 0.02 "
                 "(the synthetic config's float32 LR), warm-up 200, x0.1 at 1400 and 1600",
                 (("SOLVER.AMP.ENABLED", False),) + _fast_solver(0.02)),
        Schedule("cpu_study", "the studies' schedule before cpu_fast: 1150 iterations of 8 "
                 "images (7.7 epochs of the 1200-image synthetic train split) in bfloat16 where "
                 "the CPU has it (the synthetic config's SOLVER.AMP), LR 0.06, warm-up 200, "
                 "x0.1 at 900 and 1075: about 5 min per setting on 2 CPU cores",
                 _study_solver(0.06)),
        Schedule("cpu_study_fp32", "cpu_study's float32 twin, for a CPU without bfloat16 "
                 "instructions: the same 1150 iterations of 8 images in float32 at LR 0.02 "
                 "(the synthetic config's float32 LR), warm-up 200, x0.1 at 900 and 1075",
                 (("SOLVER.AMP.ENABLED", False),) + _study_solver(0.02)),
        Schedule("coco_1x", "Detectron2's 1x: 90k iterations of 16 images, LR 0.01, x0.1 at "
                 "60k and 80k (the paper's ablation schedule)", (
                     ("SOLVER.IMS_PER_BATCH", 16), ("SOLVER.BASE_LR", 0.01),
                     ("SOLVER.MAX_ITER", 90000), ("SOLVER.WARMUP_ITERS", 1000),
                     ("SOLVER.STEPS", (60000, 80000)), ("SOLVER.CHECKPOINT_PERIOD", 5000),
                     ("TEST.EVAL_PERIOD", 0))),
        Schedule("config", "the base config's own solver settings (no overrides; e.g. 600 "
                 "iterations of 8 images for the synthetic Faster R-CNN)"),
    ]
}


def get_study(name: str) -> Study:
    """The study called ``name``; an unknown name is a ValueError listing the studies."""
    if name not in STUDIES:
        raise ValueError(f"Unknown study {name!r}; choices: {', '.join(STUDIES)}")
    return STUDIES[name]


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; an unknown name is a ValueError listing the schedules."""
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; choices: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def resolve_overrides(overrides: Sequence[Tuple[str, OverrideValue]], cfg) -> List[str]:
    """Flatten ``(KEY, value)`` pairs into a ``[KEY, VALUE, ...]`` list of strings for
    ``cfg.merge_from_list`` / ``train_net.py``; callables are evaluated on ``cfg``."""
    out: List[str] = []
    for key, value in overrides:
        if callable(value):
            value = value(cfg)
        out += [key, value if isinstance(value, str) else repr(_plain(value))]
    return out


def _plain(value):
    """``value`` with floats rounded to 10 significant digits (nested lists / tuples too), so
    command lines and resume signatures do not depend on float noise."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value
