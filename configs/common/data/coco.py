# COCO 2017 train / val as the YAML configs read them: the resumable, seeded training stream
# (retina_focal.data.build: boxes checked against model.num_classes, any image mode read),
# multi-scale training (shorter side 640-800, flips), 800 px evaluation with COCOEvaluator
# (+ per-category AP, PR curves, coco_report.json).
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.data import transforms as T

from retina_focal.data.build import build_resumable_loader, get_training_dataset_dicts
from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.evaluation.coco_report import COCOReportEvaluator

dataloader = dict(
    train=L(build_resumable_loader)(
        dataset=L(get_training_dataset_dicts)(
            names="coco_2017_train", filter_empty=True, num_classes="${model.num_classes}"
        ),
        mapper=L(RobustDatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=(640, 672, 704, 736, 768, 800),
                    max_size=1333,
                    sample_style="choice",
                ),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="${model.input_format}",
            use_instance_mask=False,
            skip_unreadable=False,  # MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES
            decoded_image_cache_mb=0,  # MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB
        ),
        total_batch_size=16,
        seed="${train.seed}",
        aspect_ratio_grouping=True,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
        mapper=L(RobustDatasetMapper)(
            is_train=False,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice")
            ],
            image_format="${model.input_format}",
        ),
        num_workers=4,
    ),
    evaluator=L(COCOReportEvaluator)(
        dataset_name="${..test.dataset.names}",
        output_dir="${train.output_dir}/inference/${..test.dataset.names}",
    ),
)
