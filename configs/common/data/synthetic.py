# The embedded synthetic shapes datasets (retina_focal.data.datasets: "synthetic_shapes",
# "synthetic_shapes_tiny"), read as configs/common/data/coco.py reads COCO, every image at one
# size (one shorter side, no multi-scale), for CPU runs.
import copy

from .coco import dataloader as _coco


def synthetic_dataloader(dataset, image_size, total_batch_size, num_workers, filter_empty=True,
                         decoded_image_cache_mb=0):
    """``dataloader`` of ``{dataset}_train`` / ``{dataset}_val`` resized to ``image_size``
    (the YAML's INPUT.MIN_SIZE_TRAIN (image_size,), MAX_SIZE_TRAIN, MIN/MAX_SIZE_TEST);
    ``filter_empty=False`` trains on images without objects too; ``decoded_image_cache_mb``:
    MiB of decoded training images each loader process keeps (the YAML's
    MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB)."""
    dataloader = copy.deepcopy(_coco)
    dataloader.train.dataset.names = f"{dataset}_train"
    dataloader.train.dataset.filter_empty = filter_empty
    dataloader.train.total_batch_size = total_batch_size
    dataloader.train.mapper.decoded_image_cache_mb = decoded_image_cache_mb
    dataloader.test.dataset.names = f"{dataset}_val"
    for split, short_edge in (("train", (image_size,)), ("test", image_size)):
        dataloader[split].mapper.augmentations[0].short_edge_length = short_edge
        dataloader[split].mapper.augmentations[0].max_size = image_size
        dataloader[split].num_workers = num_workers
    return dataloader
