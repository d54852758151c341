"""retina_focal: the Focal Loss paper (Lin et al., ICCV 2017) and its descendants as swappable,
measurable parts of Detectron2.

Importing this package registers, in any order relative to Detectron2's own modules:

* ``RetinaFocal`` in Detectron2's ``META_ARCH_REGISTRY``;
* ``FocalRPN`` in Detectron2's ``PROPOSAL_GENERATOR_REGISTRY`` (``retina_focal.modeling``);
* ``RetinaFocalHead`` in ``RETINA_FOCAL_HEAD_REGISTRY``;
* ``SigmoidFocalLoss``, ``SigmoidFocalLossStar``, ``SoftmaxFocalLoss``, ``QualityFocalLoss``,
  ``VarifocalLoss`` in ``CLS_LOSS_REGISTRY``;
* ``AllAnchors``, ``OHEMSampler``, ``HardNegativeMiner`` in ``SAMPLER_REGISTRY``;
* ``IoUThresholdMatcher`` and ``ATSSAssigner`` in ``ASSIGNER_REGISTRY``;
* the synthetic datasets ``synthetic_shapes[_tiny]_{train,val}`` in Detectron2's catalogs.

Each kind of component derives from a base class whose docstring is the contract RetinaFocal
calls: ``DenseClsLoss``, ``AnchorAssigner``, ``AnchorSampler``.
"""
__version__ = "0.1.0"

# first: Detectron2 and fvcore without the FutureWarning of their imports (see the module)
from retina_focal.utils import quiet_imports  # noqa: F401  isort: skip
from retina_focal import data  # noqa: F401  (registers the synthetic datasets)
from retina_focal.config import add_retina_focal_config, get_config_file
from retina_focal.modeling import (
    AllAnchors,
    AnchorAssigner,
    AnchorSampler,
    ATSSAssigner,
    DenseClsLoss,
    HardNegativeMiner,
    IoUThresholdMatcher,
    OHEMSampler,
    QualityFocalLoss,
    RetinaFocal,
    RetinaFocalHead,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    VarifocalLoss,
    build_assigner,
    build_cls_loss,
    build_retina_focal_head,
    build_sampler,
)
from retina_focal.modeling.registry import (
    ASSIGNER_REGISTRY,
    CLS_LOSS_REGISTRY,
    RETINA_FOCAL_HEAD_REGISTRY,
    SAMPLER_REGISTRY,
)

__all__ = [
    "ASSIGNER_REGISTRY",
    "CLS_LOSS_REGISTRY",
    "RETINA_FOCAL_HEAD_REGISTRY",
    "SAMPLER_REGISTRY",
    "AllAnchors",
    "AnchorAssigner",
    "AnchorSampler",
    "ATSSAssigner",
    "DenseClsLoss",
    "HardNegativeMiner",
    "IoUThresholdMatcher",
    "OHEMSampler",
    "QualityFocalLoss",
    "RetinaFocal",
    "RetinaFocalHead",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "VarifocalLoss",
    "add_retina_focal_config",
    "get_config_file",
    "build_assigner",
    "build_cls_loss",
    "build_retina_focal_head",
    "build_sampler",
]
