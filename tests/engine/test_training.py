"""A real (tiny) training run and a real --eval-only run, on CPU; the values a trainer uses
checked before it builds anything."""
import json
import math
import os
import re

import pytest
import torch
from conftest import CONFIGS, REPO, TINY_CONFIG, copypaste_ap, run_tool
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import batch

from retina_focal.config import InvalidArgument
from retina_focal.engine.defaults import Trainer
from retina_focal.engine.lazy import LazyReliableTrainer
from retina_focal.engine.output_dir import LOCK_FILE
from retina_focal.engine.trainer import ReliableTrainer, check_training_values


def test_two_iterations_with_an_image_without_annotations(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage() as storage:
        # only an image without objects: every anchor negative, box loss exactly 0
        losses = model([batch(False)])
        assert math.isfinite(losses["loss_cls"].item()) and losses["loss_cls"].item() > 0
        assert losses["loss_box_reg"].item() == 0.0
        assert storage.history("num_pos_anchors").latest() == 0
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad()
        # mixed batch: both losses positive and finite, gradients everywhere finite
        losses = model([batch(True), batch(False)])
        total = sum(losses.values())
        total.backward()
        assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert storage.history("num_pos_anchors").latest() > 0
        opt.step()
    # and the model evaluates on an image with no objects
    model.eval()
    with torch.no_grad():
        out = model([batch(False)])
    assert "instances" in out[0]


def test_train_net_trains_two_iterations_then_eval_only_reports_ap(tmp_path):
    out_dir = str(tmp_path / "run")
    # the tiny dataset must contain an image without annotations, and it must be trained on
    # (and the evaluation below must handle one too)
    for split in ("train", "val"):
        dicts = DatasetCatalog.get(f"synthetic_shapes_tiny_{split}")
        assert any(len(d["annotations"]) == 0 for d in dicts), split

    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "OUTPUT_DIR", out_dir,
                     "TEST.EVAL_PERIOD", "0"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    train_rows = [m for m in metrics if "loss_cls" in m]
    assert train_rows and all(math.isfinite(m["total_loss"]) for m in train_rows)
    final = os.path.join(out_dir, "model_final.pth")
    assert os.path.exists(final)
    assert LOCK_FILE not in os.listdir(out_dir)  # the run released its output directory

    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "--eval-only",
                     "MODEL.WEIGHTS", final, "OUTPUT_DIR", out_dir], cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    values = copypaste_ap(log)
    assert len(values) == 6  # AP, AP50, AP75, APs, APm, APl
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert os.path.exists(os.path.join(out_dir, "inference", "synthetic_shapes_tiny_val",
                                       "coco_instances_results.json"))


BAD_SOLVER_VALUES = [
    ("SOLVER.IMS_PER_BATCH", 0, "use an integer > 0 divisible by the number of processes (1)"),
    ("SOLVER.IMS_PER_BATCH", -2, "use an integer > 0 divisible by the number of processes (1)"),
    ("SOLVER.MAX_ITER", -1, "use an integer >= 0"),
    ("SOLVER.BASE_LR", float("nan"), "use a finite value >= 0"),
    ("SOLVER.BASE_LR", float("inf"), "use a finite value >= 0"),
    ("SOLVER.BASE_LR", -0.01, "use a finite value >= 0"),
    ("DATALOADER.NUM_WORKERS", -1, "use an integer >= 0"),
]


@pytest.mark.parametrize("key,value,requirement", BAD_SOLVER_VALUES)
def test_bad_solver_values_stop_the_trainer_naming_the_key(tiny_cfg, tmp_path, key, value,
                                                           requirement):
    tiny_cfg.merge_from_list([key, value, "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ValueError, match="^" + re.escape(f"{key}={value!r} is invalid: "
                                                         f"{requirement}")):
        Trainer(tiny_cfg)
    assert os.listdir(tmp_path) == []  # stopped before building anything


def test_the_batch_must_divide_among_the_processes(tiny_cfg):
    tiny_cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 3])
    with pytest.raises(ValueError, match=r"^SOLVER.IMS_PER_BATCH=3 is invalid: use an integer > 0 "
                                         r"divisible by the number of processes \(2\)"):
        ReliableTrainer.check_training_config(tiny_cfg, 2)
    ReliableTrainer.check_training_config(tiny_cfg, 3)
    check_training_values(batch_size=4, max_iter=0, base_lr=0.0, num_workers=0, num_processes=2)
    with pytest.raises(InvalidArgument, match="^batch_size=True is invalid"):
        check_training_values(batch_size=True, max_iter=0, base_lr=0.0, num_workers=0,
                              num_processes=1)


@pytest.mark.parametrize("key,value,requirement", [
    ("dataloader.train.total_batch_size", 0, "use an integer > 0 divisible by the number of "
                                             "processes (1)"),
    ("train.max_iter", -5, "use an integer >= 0"),
    ("optimizer.lr", float("nan"), "use a finite value >= 0"),
    ("dataloader.train.num_workers", -1, "use an integer >= 0"),
])
def test_bad_lazy_values_stop_the_trainer_naming_the_key(key, value, requirement):
    cfg = LazyConfig.load(os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py"))
    cfg = LazyConfig.apply_overrides(cfg, [f"{key}={value}"])
    with pytest.raises(ValueError, match="^" + re.escape(f"{key}={value!r} is invalid: "
                                                         f"{requirement}")):
        LazyReliableTrainer(cfg)


# ---- non-finite losses -----------------------------------------------------------------------
class _LossModel(torch.nn.Module):
    """A 2-parameter "model": loss_a = w . x (times ``scale``), loss_b = b^2."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.b = torch.nn.Parameter(torch.tensor(0.5))
        self.scale = scale

    def forward(self, data):
        return {"loss_a": (self.w * data).sum() * self.scale, "loss_b": self.b ** 2}


def _one_failing_step(amp: bool, scale: float):
    """Run one step of the step trainer; return (the error, parameters before, after)."""
    from retina_focal.engine.trainer import build_step_trainer

    model = _LossModel(scale).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = build_step_trainer(model, iter(lambda: torch.tensor([1.0, 1.0]), None), optimizer,
                                 amp=amp, cpu_bfloat16="always")
    trainer.iter = 3
    before = [p.detach().clone() for p in model.parameters()]
    with EventStorage(start_iter=3), pytest.raises(FloatingPointError) as info:
        trainer.run_step()
    return str(info.value), before, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "cpu-bf16-autocast"])
def test_a_non_finite_loss_on_another_process_stops_this_one_unstepped(monkeypatch, amp):
    """The main process's losses are finite; process 1 (a stand-in for all_gather) reports a
    non-finite loss_a: this process stops too, naming the iteration, the term and the rank,
    and its parameters are those from before the step."""
    from types import SimpleNamespace

    import retina_focal.engine.trainer as trainer_module

    gathered = []

    def all_gather(bad):
        gathered.append(bad)
        return [bad, ["loss_a"]]

    monkeypatch.setattr(trainer_module, "comm", SimpleNamespace(get_world_size=lambda: 2,
                                                                all_gather=all_gather))
    message, before, after = _one_failing_step(amp, scale=1.0)
    assert gathered == [[]]  # this process's own terms were finite, and were shared
    assert "Non-finite loss at iteration 3: loss_a on process 1" in message
    assert "process 0" not in message
    for b, a in zip(before, after):
        assert torch.equal(b, a)  # the failing step was not applied


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "cpu-bf16-autocast"])
def test_a_non_finite_loss_on_the_main_process_stops_before_the_step(amp):
    message, before, after = _one_failing_step(amp, scale=float("inf"))
    assert "loss_a on process 0" in message and "iteration 3" in message
    for b, a in zip(before, after):
        assert torch.equal(b, a)  # not stepped with the non-finite gradient


@pytest.mark.parametrize("path", ["yaml", "lazy"])
def test_a_run_that_fails_at_its_last_iteration_is_not_evaluated(path, tmp_path):
    """Stranger test: a failure at the last iteration still ran the final evaluation, whose
    copypaste lines a script would record as the run's result, before the error."""
    out = str(tmp_path / "run")
    if path == "yaml":
        argv = ["tools/train_net.py", "--config-file", TINY_CONFIG, "SOLVER.BASE_LR", "1e8",
                "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", out]
    else:
        argv = ["tools/lazyconfig_train_net.py", "--config-file",
                os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py"),
                "optimizer.lr=1e8", "train.max_iter=2", "lr_multiplier.warmup_length=0",
                f"train.output_dir={out}", "train.device=cpu"]
    proc = run_tool(argv, cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "Loss became infinite or NaN at iteration=1" in log
    assert "Training failed at iteration 1: the final evaluation is skipped" in log
    assert "copypaste" not in log


def test_resume_into_a_folder_without_a_checkpoint_says_it_starts_from_scratch(tmp_path):
    """Stranger test: --resume with a mistyped OUTPUT_DIR started from iteration 0 with only
    an INFO line."""
    out = str(tmp_path / "typo")
    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "--resume",
                     "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", out],
                    cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "holds no checkpoint (last_checkpoint): training starts from iteration 0" in log
