"""RetinaFocal measured against Detectron2 (``retina-focal benchmark``): the focal loss
(:mod:`.focal_loss`), a training iteration and inference (:mod:`.models`), timed alike
(:mod:`.timing`) and reported (:mod:`.report`); each section takes a
:class:`~retina_focal.benchmark.settings.BenchSettings`."""
from retina_focal.benchmark.focal_loss import bench_focal
from retina_focal.benchmark.models import bench_inference, bench_train
from retina_focal.benchmark.report import print_report, write_json
from retina_focal.benchmark.settings import BenchSettings

__all__ = ["BenchSettings", "bench_focal", "bench_inference", "bench_train", "print_report",
           "write_json"]
