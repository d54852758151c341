"""Interruption and many processes, with real processes and real files, on both training
paths: a YAML config (tools/train_net.py) and its LazyConfig twin
(tools/lazyconfig_train_net.py), which share one trainer and must keep the same promises.

* SIGKILL a training run between checkpoints, ``--resume`` it: the final weights equal an
  uninterrupted run's (CPU, fixed seed), and the checkpoint holds the optimizer state, the EMA
  loss normaliser and the data-stream seed;
* the LazyConfig run trains exactly the YAML run (same weights, bit for bit);
* a kill while a checkpoint is written never leaves a partial file behind ``last_checkpoint``;
* ``--num-gpus 2`` on this CPU-only machine trains with two GLOO processes of 2 images and
  ends with the weights of one process of 4 images;
* two "machines" (two launchers, machine ranks 0 and 1, tcp://127.0.0.1) evaluate together,
  every image exactly once, with the detections of one process.

All runs of a path share one reference run (one process, 4 images per iteration). Its backbone
uses FrozenBN and its FPN no norm (the head uses GroupNorm, per image): with BatchNorm each
process would normalise with its own 2 images' statistics, which is not the same computation as
one process normalising 4 images, so exact equality would not be expected.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import CONFIGS, REPO, TINY_CONFIG, run_tool

from retina_focal.engine.output_dir import LOCK_FILE

# 4 iterations of 4 images, a checkpoint after every iteration, random horizontal flips (so
# both the data stream and the augmentation must resume), an LR step after the kill point.
# One image size: images of different sizes are padded to the largest of their batch, so 2
# batches of 2 would not be padded like 1 batch of 4.
OPTS = [
    "SEED", "7", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "2",
    "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", "",
    "MODEL.RETINANET.SCORE_THRESH_TEST", "0.001", "TEST.DETECTIONS_PER_IMAGE", "20",
]
# the same run as a LazyConfig
TINY_LAZY_CONFIG = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")
LAZY_OPTS = [
    "train.seed=7", "train.max_iter=4", "train.checkpointer.period=1",
    "dataloader.train.total_batch_size=4", "lr_multiplier.scheduler.milestones=[3]",
    "lr_multiplier.scheduler.values=[1.0,0.1]", "lr_multiplier.warmup_length=0.5",
    "model.backbone.bottom_up.stem.norm=FrozenBN", "model.backbone.bottom_up.stages.norm=FrozenBN",
    "model.backbone.norm=''", "model.test_score_thresh=0.001",
    "model.max_detections_per_image=20",
]
PATHS = ("yaml", "lazy")
NO_EVAL = {"yaml": ["DATASETS.TEST", "()"], "lazy": ["dataloader.evaluator=null"]}
VAL = "synthetic_shapes_tiny_val"


def _env():
    return dict(os.environ, PYTHONWARNINGS="ignore")


def _tool(path, flags, opts, out_dir):
    """The command line of a run of ``path`` ("yaml" or "lazy")."""
    if path == "yaml":
        return ["tools/train_net.py", "--config-file", TINY_CONFIG] + flags + OPTS + opts + [
            "OUTPUT_DIR", out_dir]
    return ["tools/lazyconfig_train_net.py", "--config-file", TINY_LAZY_CONFIG] + flags + \
        LAZY_OPTS + opts + [f"train.output_dir={out_dir}"]


def _weights(path, file):
    return ["MODEL.WEIGHTS", file] if path == "yaml" else [f"train.init_checkpoint={file}"]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


_REFERENCES = {}


def _killed_after_first_checkpoint(command, run_dir):
    """Start the run ``command`` (a tools/ command line) and kill it with SIGKILL as soon as
    the checkpoint of iteration 1 (or, if the polling process was not scheduled in time on a
    busy machine, of iteration 2) is complete; return the killed process."""
    p = subprocess.Popen([sys.executable] + command, cwd=REPO, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = os.path.join(run_dir, "last_checkpoint")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(tag) and open(tag).read().strip() in (
                "model_0000001.pth", "model_0000002.pth"):
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert p.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    return p


def _reference_run(path, tmp_path_factory):
    """One uninterrupted single-process run of ``path``, evaluated at the end (once per
    module)."""
    if path not in _REFERENCES:
        out = str(tmp_path_factory.mktemp(f"reference_{path}"))
        proc = run_tool(_tool(path, [], [], out), cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _REFERENCES[path] = out
    return _REFERENCES[path]


@pytest.fixture(scope="module", params=PATHS)
def reference(request, tmp_path_factory):
    """(path, output directory of its reference run)."""
    return request.param, _reference_run(request.param, tmp_path_factory)


def test_sigkill_between_checkpoints_then_resume_equals_uninterrupted_run(reference, tmp_path):
    path, reference = reference
    run_dir = str(tmp_path)
    p = _killed_after_first_checkpoint(_tool(path, [], NO_EVAL[path], run_dir), run_dir)
    tag = os.path.join(run_dir, "last_checkpoint")
    assert not os.path.exists(os.path.join(run_dir, "model_final.pth"))
    resumed_from = open(tag).read().strip()
    # the killed run could not release its output directory: --resume takes it over by itself
    lock = os.path.join(run_dir, LOCK_FILE)
    assert json.load(open(lock))["pid"] == p.pid

    proc = run_tool(_tool(path, ["--resume"], NO_EVAL[path], run_dir), cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f"taking over the lock of a run that ended without releasing it (killed?): " \
           f"host {socket.gethostname()}, pid {p.pid}" in log
    assert not os.path.exists(lock)  # released at the end
    start = int(resumed_from[len("model_"):-len(".pth")]) + 1
    assert 2 <= start < 4 and f"Starting training from iteration {start}" in log

    ref = _load(os.path.join(reference, "model_final.pth"))
    run = _load(os.path.join(run_dir, "model_final.pth"))
    assert ref["iteration"] == run["iteration"] == 3
    assert ref["model"].keys() == run["model"].keys()
    for k, v in ref["model"].items():
        assert torch.equal(v, run["model"][k]), k
    # the EMA normaliser, optimizer momentum and LR schedule continued, not restarted
    ema = ref["model_training_state"]["loss_normalizer"]
    assert ema == run["model_training_state"]["loss_normalizer"] and ema != 100
    ref_opt = ref["trainer"]["_trainer"]["optimizer"]
    run_opt = run["trainer"]["_trainer"]["optimizer"]
    for k, st in ref_opt["state"].items():
        assert torch.equal(st["momentum_buffer"], run_opt["state"][k]["momentum_buffer"])
    assert ref["trainer"]["hooks"] == run["trainer"]["hooks"]  # LR scheduler
    # the data stream's seed is in every checkpoint, so a resumed stream is the same stream
    assert ref["train_data_stream"] == run["train_data_stream"] == {"seed": 7}
    killed = _load(os.path.join(run_dir, resumed_from))
    assert killed["train_data_stream"] == {"seed": 7} and killed["iteration"] == start - 1
    assert killed["trainer"]["_trainer"]["optimizer"]["state"]  # momentum buffers
    assert killed["model_training_state"]["loss_normalizer"] != 100  # the EMA moved


def test_lazy_config_run_trains_the_yaml_run(tmp_path_factory):
    """Same model, data stream, augmentation, optimizer and schedule: the same weights."""
    yaml_run, lazy_run = (_load(os.path.join(_reference_run(p, tmp_path_factory),
                                             "model_final.pth")) for p in PATHS)
    assert yaml_run["model"].keys() == lazy_run["model"].keys()
    for k, v in yaml_run["model"].items():
        assert torch.equal(v, lazy_run["model"][k]), k
    assert yaml_run["model_training_state"] == lazy_run["model_training_state"]


def test_two_cpu_processes_train_like_one_process_with_the_same_total_batch(
    reference, tmp_path
):
    path, reference = reference
    proc = run_tool(_tool(path, ["--num-gpus", "2", "--dist-url", "auto"], NO_EVAL[path],
                          str(tmp_path)), cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "starting 2 CPU process(es) (GLOO" in log
    one = _load(os.path.join(reference, "model_final.pth"))
    two = _load(os.path.join(tmp_path, "model_final.pth"))
    init = _load(os.path.join(reference, "model_0000000.pth"))  # after one step
    max_diff = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    moved = max((one["model"][k] - init["model"][k]).abs().max().item() for k in one["model"])
    # equal up to float32 summation order, far below how much the weights moved meanwhile
    assert max_diff < 1e-5 and moved > 1000 * max_diff, (max_diff, moved)
    ema1 = one["model_training_state"]["loss_normalizer"]
    ema2 = two["model_training_state"]["loss_normalizer"]
    assert ema1 == pytest.approx(ema2, rel=1e-9)
    rows1 = [json.loads(x) for x in open(os.path.join(reference, "metrics.json"))]
    rows2 = [json.loads(x) for x in open(os.path.join(tmp_path, "metrics.json"))]
    for r1, r2 in zip(rows1, rows2):
        for key in ("loss_cls", "loss_box_reg", "total_loss", "lr"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-5), key


def _free_port():
    """A port that was free a moment ago (another program may take it before machine 0 binds
    it: :func:`_two_machines` then retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(path, weights, tmp_path):
    """Two launchers (machine ranks 0 and 1) on ``tcp://127.0.0.1:PORT``; returns their return
    codes, logs and output directory. The logs go to files: a pipe that nobody reads while the
    other process is awaited can fill up and block its writer forever. When machine 0 finds the
    port taken (EADDRINUSE) the pair runs again on another port."""
    for attempt in range(3):
        url = f"tcp://127.0.0.1:{_free_port()}"
        out = str(tmp_path / f"attempt{attempt}")
        files = [str(tmp_path / f"attempt{attempt}_rank{rank}.log") for rank in (0, 1)]
        procs = []
        for rank, file in zip((0, 1), files):
            with open(file, "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable] + _tool(path, ["--eval-only", "--num-gpus", "1",
                                                    "--num-machines", "2", "--machine-rank",
                                                    str(rank), "--dist-url", url],
                                             _weights(path, weights), out),
                    cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT))
        # until both end, or one fails (its peer would wait for it until the GLOO timeout)
        deadline = time.time() + 600
        while time.time() < deadline and any(p.poll() is None for p in procs) and all(
                p.poll() in (None, 0) for p in procs):
            time.sleep(0.1)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        logs = [open(file).read() for file in files]
        if procs[0].returncode == 0 or "EADDRINUSE" not in logs[0]:
            return [p.returncode for p in procs], logs, out
    pytest.fail(f"the port was taken 3 times in a row:\n{logs[0][-3000:]}")


def test_two_machines_evaluate_every_image_once_with_one_process_results(reference, tmp_path):
    path, reference = reference
    weights = os.path.join(reference, "model_final.pth")
    returncodes, logs, out = _two_machines(path, weights, tmp_path)
    assert returncodes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "world size 2" in logs[0]

    from detectron2.data import DatasetCatalog

    import retina_focal  # noqa: F401  (registers the synthetic datasets)

    ids = sorted(d["image_id"] for d in DatasetCatalog.get(VAL))
    preds = _load(os.path.join(out, "inference", VAL, "instances_predictions.pth"))
    assert sorted(p["image_id"] for p in preds) == ids  # every image, exactly once
    ref = json.load(open(os.path.join(reference, "inference", VAL, "coco_instances_results.json")))
    two = json.load(open(os.path.join(out, "inference", VAL, "coco_instances_results.json")))
    assert len(ref) > 0 and len(ref) == len(two)

    def key(d):
        return d["image_id"], -d["score"]

    for a, b in zip(sorted(ref, key=key), sorted(two, key=key)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)


# A process that saves a complete checkpoint "ckpt", then overwrites it with a 256 MB one;
# the test kills it with SIGKILL while that second file is being written.
_SAVE_TWICE = textwrap.dedent("""
    import sys, torch
    from retina_focal.engine.checkpoint import RetinaFocalCheckpointer

    class Extra:
        def __init__(self): self.value = None
        def state_dict(self): return {"payload": self.value}
        def load_state_dict(self, s): self.value = s["payload"]

    model, extra = torch.nn.Linear(64, 64), Extra()
    ckpt = RetinaFocalCheckpointer(model, sys.argv[1], save_to_disk=True, extra=extra)
    ckpt.save("ckpt", iteration=1)
    print("FIRST SAVED", flush=True)
    extra.value = torch.ones(64 << 20)
    ckpt.save("ckpt", iteration=2)
    print("SECOND SAVED", flush=True)
""")


def test_sigkill_while_writing_a_checkpoint_keeps_the_last_complete_one(tmp_path):
    from retina_focal.engine.checkpoint import RetinaFocalCheckpointer

    # stderr to a file: a pipe not read until the end could fill up and block the writer
    errors = tmp_path.parent / f"{tmp_path.name}.stderr"
    with open(errors, "w") as err:
        p = subprocess.Popen([sys.executable, "-c", _SAVE_TWICE, str(tmp_path)], cwd=REPO,
                             env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
    assert p.stdout.readline().strip() == "FIRST SAVED", errors.read_text()
    partial, deadline = None, time.time() + 120
    while partial is None and time.time() < deadline and p.poll() is None:
        for f in os.listdir(tmp_path):
            if f.endswith(".tmp") and os.path.getsize(tmp_path / f) > 8 << 20:
                p.send_signal(signal.SIGKILL)
                partial = f
                break
    assert p.wait(timeout=60) == -signal.SIGKILL, "the second save finished before the kill"
    assert partial is not None and "SECOND SAVED" not in p.stdout.read()
    # the partial write went only to the hidden temporary file
    assert os.path.getsize(tmp_path / partial) < 256 << 20
    assert open(tmp_path / "last_checkpoint").read() == "ckpt.pth"
    checkpointer = RetinaFocalCheckpointer(torch.nn.Linear(64, 64), str(tmp_path))
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 1  # the complete first checkpoint, intact


def test_a_failing_save_leaves_no_file_and_keeps_last_checkpoint(tmp_path):
    from retina_focal.engine.checkpoint import RetinaFocalCheckpointer

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    model = torch.nn.Linear(4, 4)
    ckpt = RetinaFocalCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001")
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save("model_0000002", bad=Unpicklable())
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert open(tmp_path / "last_checkpoint").read() == "model_0000001.pth"


# Faster R-CNN with the focal RPN (the third training config family): RoI sampling draws from
# torch's generator, which a resume must continue (ProcessRngState), and the focal RPN's EMA
# normaliser lives on the proposal generator
RPN_CONFIG = os.path.join(CONFIGS, "Synthetic", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
RPN_OPTS = OPTS[:OPTS.index("MODEL.RETINANET.SCORE_THRESH_TEST")] + [
    "DATASETS.TRAIN", "('synthetic_shapes_tiny_train',)", "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]


def _rpn_tool(flags, out_dir):
    return ["tools/train_net.py", "--config-file", RPN_CONFIG] + flags + RPN_OPTS + [
        "OUTPUT_DIR", out_dir]


def _rpn_uninterrupted_and_resumed(tmp_path, flags):
    """The final checkpoints of an uninterrupted focal-RPN Faster R-CNN run and of one killed
    after its first checkpoint and resumed (``flags``: the launch options); the weights are
    checked equal bit for bit."""
    reference = str(tmp_path / "reference")
    proc = run_tool(_rpn_tool(flags, reference), cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run_dir = str(tmp_path / "killed")
    _killed_after_first_checkpoint(_rpn_tool(flags, run_dir), run_dir)
    proc = run_tool(_rpn_tool(flags + ["--resume"], run_dir), cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ref = _load(os.path.join(reference, "model_final.pth"))
    run = _load(os.path.join(run_dir, "model_final.pth"))
    assert ref["iteration"] == run["iteration"] == 3
    for k, v in ref["model"].items():
        assert torch.equal(v, run["model"][k]), k
    return ref, run


def test_focal_rpn_faster_rcnn_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    """Issue 28: a kill-and-resume test for every training config family. The resumed run's
    final weights equal the uninterrupted run's bit for bit: the focal RPN's EMA normaliser
    and the generators RoI sampling draws from continue instead of restarting."""
    ref, run = _rpn_uninterrupted_and_resumed(tmp_path, [])
    ema = ref["model_training_state"]["proposal_generator.loss_normalizer"]
    assert ema == run["model_training_state"]["proposal_generator.loss_normalizer"] != 100
    assert torch.equal(ref["rng"]["torch"], run["rng"]["torch"])


def test_two_process_focal_rpn_faster_rcnn_sigkill_then_resume_equals_uninterrupted_run(
        tmp_path):
    """The same with two processes: each process's generators are in every checkpoint
    (AllRanksPeriodicCheckpointer gathers them before each save) and each takes its own back
    on resume, so both processes sample the RoIs the uninterrupted run sampled."""
    ref, run = _rpn_uninterrupted_and_resumed(tmp_path, ["--num-gpus", "2", "--dist-url", "auto"])
    # one set of generators per process, each its own
    ranks = ref["rng"]["ranks"]
    assert ref["rng"]["world_size"] == 2 and len(ranks) == 2
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    for a, b in zip(ranks, run["rng"]["ranks"]):
        assert torch.equal(a["torch"], b["torch"])
