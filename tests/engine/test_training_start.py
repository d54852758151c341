"""Issue 28 (2, 4): a training run is refused, before it writes anything, where it would lose
or mislabel the run already in its output directory (retina_focal.engine.output_dir.
check_training_start): training from scratch over a finished run, and resuming a run on a
dataset whose classes have other names. The refused command prints one error line and leaves
every file of the directory as it was; the same holds for both config systems."""
import json
import os
import shutil

import pytest
from conftest import CONFIGS, TINY_CONFIG, snapshot

from retina_focal.cli import main
from retina_focal.engine.output_dir import TrainingRefused, check_training_start

LAZY_TINY = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")
CLASSES = ["ellipse", "rectangle", "triangle", "cross", "star", "ring"]  # the tiny dataset's


@pytest.fixture
def finished_run(trained, tmp_path):
    """A copy of the shared trained tiny run (model_final.pth, last_checkpoint, config.yaml,
    metrics.json, events file)."""
    out = str(tmp_path / "run")
    shutil.copytree(trained["out"], out)
    return out


def renamed_dataset(trained, tmp_path, names):
    """``--dataset`` argument of the tiny val split with its categories renamed ``names``
    (same ids, same count), registered as "renamed" (each test its own file: the name is
    registered once per file in this process)."""
    data = json.load(open(trained["gt_json"]))
    for category, name in zip(data["categories"], names):
        category["name"] = name
    path = tmp_path / "renamed.json"
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if "renamed" in DatasetCatalog.list():  # the previous test's
        DatasetCatalog.remove("renamed")
        MetadataCatalog.remove("renamed")
    path.write_text(json.dumps(data))
    return f"renamed={path}:{trained['image_dir']}"


def run_refused(capsys, argv, out, fragments):
    before = snapshot(out)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert snapshot(out) == before  # not one file written, replaced or removed


def test_training_from_scratch_over_a_finished_run_is_refused_yaml(finished_run, capsys):
    run_refused(capsys, ["train", "--config-file", TINY_CONFIG, "OUTPUT_DIR", finished_run,
                         "SOLVER.MAX_ITER", "2"], finished_run,
                [f"{finished_run} already holds a training run (last_checkpoint, "
                 "model_final.pth)", "--resume", "(OUTPUT_DIR)"])


def test_training_from_scratch_over_a_finished_run_is_refused_lazy(finished_run, capsys):
    run_refused(capsys, ["lazy-train", "--config-file", LAZY_TINY,
                         f"train.output_dir={finished_run}", "train.device=cpu",
                         "train.max_iter=2"], finished_run,
                ["already holds a training run", "(train.output_dir)"])


def test_resuming_on_classes_with_other_names_is_refused_yaml(finished_run, trained, tmp_path,
                                                              capsys):
    """Same class count (6), other names: a count check passes; the class map does not."""
    other = ["a", "b", "c", "d", "e", "f"]
    run_refused(capsys, ["train", "--config-file", TINY_CONFIG, "--resume",
                         "--dataset", renamed_dataset(trained, tmp_path, other),
                         "DATASETS.TRAIN", '("renamed",)', "DATASETS.TEST", '("renamed",)',
                         "OUTPUT_DIR", finished_run, "SOLVER.MAX_ITER", "12"], finished_run,
                ["Cannot resume", "model_final.pth", "other classes than DATASETS.TRAIN "
                 "(renamed)", "checkpoint (6): [1: ellipse, 2: rectangle",
                 "DATASETS.TRAIN (renamed) (6): [1: a, 2: b"])


def test_resuming_on_classes_with_other_names_is_refused_lazy(finished_run, trained, tmp_path,
                                                              capsys):
    other = CLASSES[1:] + CLASSES[:1]  # the same names in another order: other classes per output
    run_refused(capsys, ["lazy-train", "--config-file", LAZY_TINY, "--resume",
                         "--dataset", renamed_dataset(trained, tmp_path, other),
                         "dataloader.train.dataset.names=renamed",
                         "dataloader.test.dataset.names=renamed",
                         f"train.output_dir={finished_run}", "train.device=cpu",
                         "train.max_iter=12"], finished_run,
                ["Cannot resume", "dataloader.train.dataset.names (renamed)"])


def test_the_check_lets_through_what_is_the_same_run(finished_run, tmp_path):
    """The other side: resuming on the same names (ids may differ), a directory without a run,
    a checkpoint without a class map (Detectron2's), and evaluation-only runs."""
    same_names_other_ids = [{"id": 10 + i, "name": n} for i, n in enumerate(CLASSES)]
    check_training_start(finished_run, resume=True, class_map=same_names_other_ids,
                         classes_desc="x")
    check_training_start(str(tmp_path / "new"), resume=False, class_map=None, classes_desc="x")
    empty = tmp_path / "empty"
    empty.mkdir()
    check_training_start(str(empty), resume=True, class_map=[], classes_desc="x")
    # the class map is only computed when there is a checkpoint to compare with
    check_training_start(str(empty), resume=True, classes_desc="x",
                         class_map=lambda: pytest.fail("computed without a checkpoint"))
    with pytest.raises(TrainingRefused, match=r"checkpoint \(6\).*\n.*x \(5\)"):
        check_training_start(finished_run, resume=True, class_map=same_names_other_ids[:5],
                             classes_desc="x")
    import torch

    data = torch.load(os.path.join(finished_run, "model_final.pth"), weights_only=False)
    del data["class_map"]
    torch.save(data, os.path.join(finished_run, "model_final.pth"))
    check_training_start(finished_run, resume=True, class_map=[{"id": 1, "name": "z"}],
                         classes_desc="x")


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--config-file", TINY_CONFIG, "MODEL.WEIGHTS", "{tmp}/nope.pth"], "nope.pth"),
    (["train", "--config-file", TINY_CONFIG, "--eval-only", "MODEL.WEIGHTS", "{tmp}/nope.pth"],
     "nope.pth"),
    (["eval", "--config-file", TINY_CONFIG, "MODEL.WEIGHTS", "{tmp}/nope.pth"], "nope.pth"),
    # a file that is no checkpoint: refused while the model is loaded (after setup wrote its
    # config and log there)
    (["train", "--config-file", TINY_CONFIG, "MODEL.WEIGHTS", "{tmp}/bad.pth"], "bad.pth"),
    (["lazy-train", "--config-file", LAZY_TINY, "train.device=cpu",
      "train.init_checkpoint={tmp}/nope.pth"], "nope.pth"),
])
def test_a_refused_run_leaves_no_output_directory_it_created(tmp_path, capsys, argv, fragment):
    """A run refused before it starts (a checkpoint that does not exist, or is no checkpoint)
    into an OUTPUT_DIR that did not exist leaves none behind (it created it to lock it); one
    that existed stays, unchanged."""
    (tmp_path / "bad.pth").write_text('{"not": "a checkpoint"}')
    out = tmp_path / "new_run"
    key = ["train.output_dir={}".format(out)] if argv[0] == "lazy-train" else [
        "OUTPUT_DIR", str(out)]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + key
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err, err[-2000:]
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(str(out))
    assert main(argv) == 1
    assert snapshot(str(out)) == before
