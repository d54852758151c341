"""What a benchmark run measures: :class:`BenchSettings`, the plain values the sections read
(the ``benchmark`` command builds it from its options)."""
from dataclasses import dataclass
from typing import Tuple

__all__ = ["BenchSettings"]


@dataclass(frozen=True)
class BenchSettings:
    """The settings of a benchmark run (``retina-focal benchmark --help`` says each).

    Attributes:
        config_file: the model config (a path, or a shipped config's name).
        opts: config overrides, ``KEY VALUE`` pairs flattened.
        classes: classes of the models and of the synthetic batches.
        gn_head: GroupNorm in the head (RetinaNet's paper head) instead of the config's norm.
        image_size: (H, W) of the inference / export image and of the training batch.
        images: images per training batch.
        anchors: anchors in the loss section's batch.
        alpha, gamma: the focal loss's of the loss section and the recompilation counts (the
            command takes them from the config and its overrides, ``focal_params``).
        repeats: timed rounds per figure (the median is reported).
        warmup: untimed runs first.
        train_bfloat16, profile, with_compile: the training / loss sections' extras.
        ort_threads, ort_opt_level: onnxruntime's intra-op threads (0: its default) and graph
            optimisation level (export section).
    """

    config_file: str
    opts: Tuple[str, ...] = ()
    classes: int = 80
    gn_head: bool = True
    image_size: Tuple[int, int] = (512, 640)
    images: int = 2
    anchors: int = 240000
    alpha: float = 0.25
    gamma: float = 2.0
    repeats: int = 7
    warmup: int = 2
    train_bfloat16: bool = False
    profile: bool = False
    with_compile: bool = False
    ort_threads: int = 0
    ort_opt_level: str = "all"
