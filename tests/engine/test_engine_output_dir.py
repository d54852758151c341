"""retina_focal.engine.output_dir: one run per output directory (a lock taken by setup_cfg /
setup_lazy_cfg before anything is written there), stale locks of killed runs taken over, and
the temporary files of interrupted atomic writes removed when a run takes the directory."""
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import CONFIGS, REPO, TINY_CONFIG

from retina_focal import cli
from retina_focal.cli._args import run_options
from retina_focal.engine.defaults import default_argument_parser, setup_cfg
from retina_focal.engine.launch import launch
from retina_focal.engine.lazy import setup_lazy_cfg
from retina_focal.engine.output_dir import (
    LOCK_FILE,
    OutputDirInUse,
    claim_output_dir,
    release_output_dir,
)
from retina_focal.utils.file_io import is_temporary_file, temporary_path

TINY_LAZY_CONFIG = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")

# A run that holds its output directory until its stdin closes, then exits normally.
_HOLDER = textwrap.dedent("""
    import sys
    from retina_focal.engine.output_dir import claim_output_dir
    claim_output_dir(sys.argv[1])
    print("HOLDING", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def holder(tmp_path):
    """(output directory, pid of the live process holding it)."""
    out = str(tmp_path / "run")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, out, "--marker-of-the-first-run"],
                         cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "HOLDING", p.stderr.read()
        yield out, p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0
    assert not os.path.exists(os.path.join(out, LOCK_FILE))  # released when it exited


def yaml_args(out, *flags):
    """setup_cfg's arguments from the command line ``retina-focal train`` would parse."""
    return run_options(default_argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, *flags, "OUTPUT_DIR", out]))


def test_a_second_run_in_a_used_output_dir_stops_before_writing_anything(holder, capsys):
    out, pid = holder
    expected = (rf"The output directory {re.escape(out)} is in use by another run: host "
                rf"{socket.gethostname()}, pid {pid}, started \S+, command: .*"
                r"--marker-of-the-first-run")
    with pytest.raises(OutputDirInUse, match=expected):
        setup_cfg(**yaml_args(out))
    with pytest.raises(OutputDirInUse, match=expected):
        setup_cfg(**yaml_args(out, "--eval-only"))  # evaluation writes there too
    lazy_args = default_argument_parser().parse_args(
        ["--config-file", TINY_LAZY_CONFIG, f"train.output_dir={out}"])
    with pytest.raises(OutputDirInUse, match=expected):
        setup_lazy_cfg(**run_options(lazy_args))
    # the commands: exit status 1 and the message, nothing else
    for command, opts in (("train", ["OUTPUT_DIR", out]),
                          ("lazy-train", [f"train.output_dir={out}"])):
        config = TINY_CONFIG if command == "train" else TINY_LAZY_CONFIG
        assert cli.main([command, "--config-file", config, *opts]) == 1
        err = capsys.readouterr().err
        assert f"error: The output directory {out} is in use by another run" in err
        assert "Traceback" not in err
    # no config.yaml, log.txt, metrics.json: the first run's directory is untouched
    assert os.listdir(out) == [LOCK_FILE]


def test_a_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path, caplog):
    out = str(tmp_path / "run")
    os.makedirs(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = os.path.join(out, LOCK_FILE)
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "started": "yesterday",
                   "command": "train_net.py --killed"}, f)
    # what atomic writes killed mid-write leave, and files that only look like it
    leftovers = [os.path.basename(temporary_path(os.path.join(out, "model_0000009.pth"))),
                 ".last_checkpoint.123.456.tmp"]
    others = ["notes.tmp", ".model.pth.tmp", "model.1.2.tmp", ".model.pth.12.tmp",
              "metrics.json", ".model.pth.1.2.tmp.keep"]
    for name in leftovers + others:
        open(os.path.join(out, name), "w").close()
    os.makedirs(os.path.join(out, ".inference.1.2.tmp"))  # a directory, not a leftover file
    assert all(is_temporary_file(n) for n in leftovers)
    assert not any(is_temporary_file(n) for n in others)

    with caplog.at_level(logging.WARNING, logger="retina_focal"):
        cfg = setup_cfg(**yaml_args(out, "--resume"))
    try:
        log = caplog.text
        assert (f"{out}: taking over the lock of a run that ended without releasing it "
                f"(killed?): host {socket.gethostname()}, pid {dead.pid}, started yesterday, "
                "command: train_net.py --killed; that process no longer exists") in log
        assert f"{out}: removed 2 temporary file(s) left by an interrupted write" in log
        assert json.load(open(lock))["pid"] == os.getpid()
        left = set(os.listdir(out))
        assert not left & set(leftovers) and set(others) <= left
        assert {"config.yaml", "log.txt", ".inference.1.2.tmp"} <= left
        # re-entrant in one process (e.g. train, then --eval-only in the same session)
        assert claim_output_dir(out) is not None
    finally:
        release_output_dir(cfg.OUTPUT_DIR)
    assert not os.path.exists(lock)


def test_a_lock_of_another_host_is_obeyed(tmp_path):
    out = str(tmp_path)
    with open(os.path.join(out, LOCK_FILE), "w") as f:
        json.dump({"host": "elsewhere", "pid": 1, "started": "now", "command": "x"}, f)
    with pytest.raises(OutputDirInUse, match=rf"host elsewhere, pid 1, .*delete "
                                             rf"{re.escape(os.path.join(out, LOCK_FILE))}"):
        claim_output_dir(out)
    with open(os.path.join(out, LOCK_FILE), "w") as f:
        f.write("")  # unreadable: obeyed too
    with pytest.raises(OutputDirInUse, match="an unknown run"):
        claim_output_dir(out)


def _claim_in_each_process(free, used, results):
    """Run by two processes: claim a free and a used directory, record what happened."""
    from detectron2.utils import comm

    lock = claim_output_dir(free)
    try:
        claim_output_dir(used)
        refused = None
    except OutputDirInUse as e:
        refused = str(e)
    release_output_dir(free)
    with open(os.path.join(results, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"locked": lock is not None, "refused": refused}, f)


def test_only_the_main_process_locks_and_every_process_stops_when_it_cannot(holder, tmp_path):
    used, _ = holder
    free, results = str(tmp_path / "free"), str(tmp_path / "results")
    os.makedirs(results)
    launch(_claim_in_each_process, 2, dist_url="auto", args=(free, used, results))
    ranks = [json.load(open(os.path.join(results, f"rank{r}.json"))) for r in (0, 1)]
    assert [r["locked"] for r in ranks] == [True, False]
    assert all(r["refused"] and f"{used} is in use by another run" in r["refused"]
               for r in ranks)
    assert os.listdir(free) == []  # released by the main process
    assert os.listdir(used) == [LOCK_FILE]


def test_the_commands_release_the_output_dir_when_they_end_or_fail(trained, tmp_path, capsys):
    out = str(tmp_path / "run")
    lock = os.path.join(out, LOCK_FILE)
    yaml = ["train", "--config-file", TINY_CONFIG, "--eval-only", "DATASETS.TEST", "()",
            "OUTPUT_DIR", out]
    lazy = ["lazy-train", "--config-file", TINY_LAZY_CONFIG, "--eval-only",
            "dataloader.evaluator=null", f"train.output_dir={out}"]
    weights = trained["weights"]
    for command in (yaml + ["MODEL.WEIGHTS", weights], lazy + [f"train.init_checkpoint={weights}"]):
        assert cli.main(command) == 0
        assert os.path.exists(os.path.join(out, "config.yaml")) and not os.path.exists(lock)
    # an evaluation without a checkpoint would score an untrained model: refused, naming the key
    # each with its own config system's syntax in the example
    for command, key, example in (
            (yaml, "MODEL.WEIGHTS is empty", "`MODEL.WEIGHTS output/model_final.pth`"),
            (lazy, "train.init_checkpoint is empty",
             "`train.init_checkpoint=output/model_final.pth`), or --resume with a "
             "train.output_dir")):
        assert cli.main(command) == 1
        err = capsys.readouterr().err
        assert key in err and example in err, err
        assert not os.path.exists(lock)
    missing = str(tmp_path / "missing.pth")
    for command in (yaml + ["MODEL.WEIGHTS", missing],
                    lazy + [f"train.init_checkpoint={missing}"]):
        assert cli.main(command) == 1  # one error line naming the file
        assert "missing.pth" in capsys.readouterr().err
        assert not os.path.exists(lock)
