"""Runs an ablation study: one training run per setting, several at a time, resumable.

Each setting trains with :func:`retina_focal.engine.defaults.train_config` (what
``retina-focal train`` runs) in a process of its own, in ``DIR/NN_<label>/``; its
final COCO evaluation (read from that run's ``metrics.json``) is saved to ``result.json`` there
(written last: its presence means the setting is complete), with, in a timed study (Table 1e),
the run's inference time per image read from its ``log.txt``, and the run's key: the hash of
its fully resolved config (:mod:`retina_focal.ablation.records`). Running the same study again
resumes: a setting with a ``result.json`` of the same resolved config is not trained again,
and one made by another study beside this one with the same resolved config is reused.
``DIR/results.{md,json,png}`` are rewritten after every setting.
"""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import retina_focal
from retina_focal.ablation.records import (
    LEGACY,
    RESULT_FILE,
    compare_record,
    dataset_fingerprints,
    describe_difference,
    finished_runs,
    override_pairs,
    resolved_config,
    run_of_label,
    run_signature,
)
from retina_focal.ablation.results import (
    TASK_METRICS,
    read_final_metrics,
    read_inference_time,
    write_results,
)
from retina_focal.ablation.studies import (
    Setting,
    Study,
    check_study_model,
    get_schedule,
    get_study,
    resolve_overrides,
)
from retina_focal.config.loading import merge_config_overrides
from retina_focal.config.zoo import resolve_config_file
from retina_focal.data.checks import check_num_classes
from retina_focal.data.datasets.coco import (
    check_registered,
    parse_dataset_spec,
    register_dataset_specs,
)
from retina_focal.engine.defaults import build_cfg
from retina_focal.utils.file_io import (
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
)

__all__ = ["RESULT_FILE", "RunMadeOtherwise", "StudyInterrupted", "StudyRunner", "build_plan",
           "check_finished_runs", "check_overrides_kept", "check_results_folder", "parse_seeds",
           "setting_dirname"]

# a setting's process, given CONFIG_FILE [NAME=JSON:IMAGE_DIR ...] -- OPTS:
# retina_focal.engine.defaults.train_config(CONFIG_FILE, OPTS, datasets=[NAME=JSON:IMAGE_DIR])
TRAIN_PROGRAM = ("import sys; from retina_focal.engine.defaults import train_config; "
                 "n = sys.argv.index('--'); "
                 "train_config(sys.argv[1], sys.argv[n + 1:], datasets=sys.argv[2:n])")
# lines of a training run worth echoing: Detectron2's per-iteration metrics (with ETA), the
# evaluation's progress and the final AP
ECHO = re.compile(r" iter: \d|Inference done|copypaste: \d|Traceback|Error|^error: ")

# re-entrant: a signal handler (in the main thread) may log while the thread holds it
_print_lock = threading.RLock()
# the signals that stop a study: its settings' processes are stopped, then the runner exits
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
# seconds a setting's process has to end after SIGTERM before it is killed
STOP_GRACE_S = 10.0
# said of a run taken from a record without the config's hash
_UNCHECKED = (" (its record predates the config check: the content of its config was not "
              "compared; delete its folder to train it again)")


def log(msg: str) -> None:
    with _print_lock:
        print(f"[ablate {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def setting_dirname(index: int, label: str) -> str:
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", label).strip("_")


def split_labels(text: str, labels: Sequence[str], study: str = "") -> List[str]:
    """The settings ``--settings`` names: labels separated by commas, where a label may hold
    commas itself (``IoU [0.4, 0.5],ATSS top-9``: the pieces are joined until they spell a
    label). Raises ValueError naming the text and the study's ``labels`` when it names
    none, holds an empty label (``a,,b``, a comma at an end), or pieces that spell no label
    (each named: ``CE,FL`` names ``CE`` and ``FL``)."""
    pieces = text.split(",")
    if not any(p.strip() for p in pieces):
        raise ValueError(f"--settings {text!r} names no setting; its settings: {list(labels)}")
    if not all(p.strip() for p in pieces):  # "a,,b" or a comma at an end: refused, as --seeds
        raise ValueError(f"--settings {text!r} has an empty label: give LABEL,LABEL,... with "
                         "one comma between labels")
    wanted: List[str] = []
    unknown: List[str] = []
    start = 0
    while start < len(pieces):
        # the fewest pieces from ``start`` that spell a label; none: this piece is unknown
        ends = [end for end in range(start + 1, len(pieces) + 1)
                if ",".join(pieces[start:end]).strip() in labels]
        if ends:
            wanted.append(",".join(pieces[start:ends[0]]).strip())
            start = ends[0]
        else:
            unknown.append(pieces[start].strip())
            start += 1
    if unknown:
        raise ValueError(f"--settings: {unknown} not in study {study}; its settings: "
                         f"{list(labels)}")
    return wanted


def build_plan(config_file: str, study_name: str, schedule_name: str,
               seeds: Optional[str] = None, settings_text: Optional[str] = None,
               opts: Sequence[str] = (), output: Optional[str] = None,
               workers: int = 1, datasets: Sequence[str] = ()) -> Dict:
    """Validate the study, schedule, config and overrides (the ablate command's options, by
    name: ``seeds`` "0,1", ``settings_text`` "L1,L2", ``datasets`` the ``--dataset
    NAME=JSON:IMAGE_DIR`` specs, registered here and in every setting's process); return the
    plan: the runs to make, the config file (resolved), the study's folder and the workers.
    Every setting's config is built and checked here (its keys, its datasets and their class
    count), and the study's folder too, so bad input fails before anything is written or
    trained."""
    study = get_study(study_name)
    schedule = get_schedule(schedule_name)
    if workers < 1:
        raise ValueError(f"--workers={workers} is invalid: use 1 or more")
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"Overrides must be KEY VALUE pairs, got an odd list: {opts}")
    if output is not None and not output.strip():  # e.g. an unset shell variable
        raise ValueError(f"--output {output!r} is empty: give the study's folder, or leave "
                         "--output out for output/ablations/<study>_<schedule>")
    out_dir = output or os.path.join("output", "ablations", f"{study.name}_{schedule.name}")
    # a file, or a path under one, or another study's folder: refused before anything is
    # written or trained
    check_output_dir(out_dir, "--output")
    check_results_folder(out_dir, study.name, schedule.name)
    # a path, or a shipped config's name (a missing one: ConfigFileNotFound naming it)
    config_file = resolve_config_file(config_file)
    settings = list(study.settings)
    if settings_text is not None:  # "" too (an unset shell variable): it names no setting
        wanted = split_labels(settings_text, study.labels(), study.name)
        settings = [s for s in settings if s.label in wanted]

    # the user's COCO files: read and checked now (a bad file fails before anything trains);
    # each setting's process registers them again, from absolute paths
    specs = [parse_dataset_spec(spec) for spec in datasets]
    register_dataset_specs(datasets)
    dataset_args = [f"{name}={os.path.abspath(j)}:{os.path.abspath(d)}" for name, j, d in specs]
    fingerprints = {f["name"]: f for f in dataset_fingerprints(specs)}

    base = build_cfg(config_file, freeze=False)
    # the command line's overrides alone first: a ConfigError naming the key or the option
    merge_config_overrides(base.clone(), opts)
    check_overrides_kept(opts, study, settings, seeds is not None)
    common = resolve_overrides(schedule.overrides, base) + opts
    try:
        base.merge_from_list(common)
    except (KeyError, AssertionError, ValueError) as e:
        raise ValueError(f"Bad override in the schedule {schedule.name!r} or on the command "
                         f"line ({opts}) for {config_file}: {e}") from e
    # [None]: without --seeds, one run per setting with no SEED override
    seed_list: List[Optional[int]] = [*parse_seeds(seeds)] or [None]
    # what ran, for the results: the command line's overrides (those of the schedule's keys
    # beside the schedule's value) and the solver settings they and the schedule leave
    scheduled = override_pairs(resolve_overrides(schedule.overrides, base))
    overrides = [{"key": k, "value": v, **({"schedule_value": scheduled[k]} if k in scheduled
                                           else {})}
                 for k, v in override_pairs(opts).items()]
    solver = {key: _config_value(base, key) for key in SOLVER_KEYS}

    def runs_of(setting: Setting, seeds: Sequence[Optional[int]], check: bool = True) -> List:
        """The runs of ``setting``, one per seed; ``check``: its datasets must be registered
        (checked once here, not in every run)."""
        own = resolve_overrides(setting.overrides, base)
        cfg = base.clone()
        try:
            cfg.merge_from_list(own)
        except (KeyError, AssertionError, ValueError) as e:
            raise ValueError(
                f"Study {study.name}, setting {setting.label!r}: the overrides {own} do not "
                f"apply to {config_file}: {e}. (Keys a study needs must exist in "
                "retina_focal.add_retina_focal_config or the base config.)") from e
        for key in ("DATASETS.TRAIN", "DATASETS.TEST") if check else ():
            check_registered(getattr(cfg.DATASETS, key.split(".")[1]),
                             f"{key} of setting {setting.label!r}",
                             how="Each setting trains in a new process, which knows the "
                                 "synthetic presets and the datasets of --dataset: register "
                                 "your COCO files with --dataset NAME=JSON:IMAGE_DIR, or use "
                                 "a registered dataset")
        if check:  # the model's class count against its datasets', before anything trains
            check_study_model(study, cfg, setting.label, config_file, opts[::2])
            check_model_builds(cfg, setting.label)
            try:
                check_num_classes(cfg)
            except ValueError as e:
                raise ValueError(f"setting {setting.label!r}: {e}") from None
        # the --dataset files the setting's runs read: part of their key
        datasets_read = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
        used = [fingerprints[n] for n in dict.fromkeys(datasets_read) if n in fingerprints]
        runs = []
        for seed in seeds:
            # with --seeds, one run per seed (SEED last: it wins), labelled by both
            seed_opts = [] if seed is None else ["SEED", str(seed)]
            label = setting.label if seed is None else f"{setting.label} seed={seed}"
            run_opts = [str(o) for o in common + own + seed_opts]
            # what the run trains, whatever it came from: its key (records.py)
            run_cfg = cfg.clone()
            run_cfg.merge_from_list(seed_opts)
            config = resolved_config(run_cfg)
            runs.append({"index": study.settings.index(setting) + 1, "setting": setting,
                         "label": label, "seed": seed, "opts": run_opts, "config": config,
                         "datasets_read": datasets_read,
                         "signature": run_signature(config_file, run_opts, config, used)})
        return runs

    runs = [run for setting in settings for run in runs_of(setting, seed_list)]
    check_datasets_used(fingerprints, runs)
    tabled, foreign = check_finished_runs(out_dir, study, runs,
                                          lambda s, seed: runs_of(s, [seed], check=False)[0])
    return {"study": study, "schedule": schedule, "runs": runs, "out_dir": out_dir,
            "config_file": config_file, "workers": workers, "tabled": tabled,
            "foreign": foreign, "overrides": overrides, "solver": solver,
            "datasets": dataset_args}


def check_model_builds(cfg: Any, label: str) -> None:
    """Build the model of setting ``label`` (its config ``cfg``) once on the CPU and throw it
    away: a bad value or registry name of a key that only the model reads (a loss, sampler or
    head name, a loss the RPN cannot take) fails here, as a ValueError naming the setting,
    before anything trains, rather than in every setting's process after the study began."""
    from retina_focal.engine.defaults import build_model

    cpu = cfg.clone()
    cpu.MODEL.DEVICE = "cpu"
    cpu.MODEL.WEIGHTS = ""
    try:
        build_model(cpu)
    except (ValueError, KeyError, AssertionError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"setting {label!r}: its model cannot be built: {message}") from None


def check_datasets_used(registered: Dict[str, Any], runs: Sequence[Dict]) -> None:
    """Refuse (ValueError naming them) the ``--dataset`` names (``registered``) that no run
    trains or evaluates on: such a study trains on the base config's datasets while its
    results list the user's as if used (the ``DATASETS.TRAIN`` / ``DATASETS.TEST`` overrides
    forgotten, or replaced by the settings' own)."""
    read = {name for run in runs for name in run["datasets_read"]}
    unused = [name for name in registered if name not in read]
    if unused:
        given = ", ".join(repr(n) for n in unused)
        chosen = all("DATASETS.TRAIN" in dict(run["setting"].overrides) for run in runs)
        fix = ("the study's settings choose their own datasets, so it cannot take yours: leave "
               "--dataset out" if chosen else
               "add DATASETS.TRAIN \"('NAME',)\" DATASETS.TEST \"('NAME',)\" to the overrides, "
               "or leave --dataset out")
        raise ValueError(
            f"--dataset {given}: no run of this study trains or evaluates on "
            f"{'it' if len(unused) == 1 else 'them'} (the runs read {sorted(read)}); {fix}")


# the solver settings results.md says a study ran with (after the schedule and the overrides)
SOLVER_KEYS = ("SOLVER.IMS_PER_BATCH", "SOLVER.BASE_LR", "SOLVER.MAX_ITER",
               "SOLVER.WARMUP_ITERS", "SOLVER.STEPS", "SOLVER.AMP.ENABLED")


def _config_value(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return list(cfg) if isinstance(cfg, tuple) else cfg


def check_overrides_kept(opts: Sequence[str], study: Study, settings: Sequence[Setting],
                         with_seeds: bool) -> None:
    """Refuse (ValueError naming the key and the settings) a ``KEY VALUE`` override of the
    command line that would be lost: a key that one of ``settings`` sets itself (a setting's
    keys are applied after the command line's), or ``SEED`` when ``--seeds`` sets each run's
    (``with_seeds``), or ``OUTPUT_DIR`` (each run's is its folder in the study's). A key of the
    schedule may be overridden: the command line comes after it."""
    given = override_pairs(opts)  # the last value of a key is the one merged
    if "OUTPUT_DIR" in given:
        raise ValueError(f"the override OUTPUT_DIR {given['OUTPUT_DIR']} would be lost: each "
                         "run writes to its own folder in the study's folder; give --output "
                         "for the study's folder instead")
    for key, value in given.items():
        setters = [s.label for s in settings if key in {k for k, _ in s.overrides}]
        if setters:
            raise ValueError(
                f"the override {key} {value} would be lost: the setting(s) {setters} of study "
                f"{study.name} set {key} themselves, after the command line's overrides; leave "
                "it out, or choose settings that do not set it with --settings")
        if key == "SEED" and with_seeds:
            raise ValueError(f"the override SEED {value} would be lost: --seeds sets the SEED of "
                             "each run; leave one of them out")


class RunMadeOtherwise(ValueError):
    """A study folder holds a finished run of one of the study's settings made with other
    settings (another resolved config), which the study would train again over, or table
    beside its own runs as if made alike; the message names the folder and what differs."""


def made_otherwise(run_dir: str, run: Dict, record: Dict, planned: bool) -> RunMadeOtherwise:
    """The refusal of the finished run in ``run_dir`` (its ``record``), made otherwise than
    ``run`` (``planned``: a run this command trains; else one it would table)."""
    what = ("this command would train it again over it" if planned else
            "its result would be tabled beside this command's runs as if made alike")
    return RunMadeOtherwise(
        f"{run_dir} holds a finished run of {run['label']!r} made with other settings "
        f"({describe_difference(record, run['signature'], run['config'])}); {what}: choose "
        "another --output, or delete that run folder")


def check_finished_runs(out_dir: str, study: Study, runs: List[Dict],
                        run_of: Callable[[Setting, Optional[int]], Dict]
                        ) -> Tuple[List[Dict], List[str]]:
    """Match the finished runs in ``out_dir`` (their ``result.json``) with this study's runs
    before anything trains: a finished run made with other settings than this command's
    (``run_of(setting, seed)`` builds a run it does not train) is refused
    (:class:`RunMadeOtherwise`). Returns the runs of the study finished in the folder that the
    command does not train (tabled in the results with its own), and the run folders that are
    not runs of the study (left out)."""
    planned = {run["label"]: run for run in runs}
    tabled, foreign = [], []
    for run_dir, record in finished_runs(out_dir):
        found = run_of_label(study, record.get("label"))
        if found is None:
            foreign.append(run_dir)
            continue
        label = record["label"]
        run = planned.get(label) or run_of(*found)
        if os.path.basename(run_dir) != setting_dirname(run["index"], label):
            foreign.append(run_dir)
            continue
        if compare_record(record, run["signature"]) is None:
            raise made_otherwise(run_dir, run, record, planned=label in planned)
        if label not in planned:
            tabled.append(run)
    return tabled, foreign


def check_results_folder(out_dir: str, study_name: str, schedule_name: str) -> None:
    """Refuse (ValueError naming the folder and what it holds) a study folder ``out_dir`` whose
    ``results.{json,md,png}`` this study would overwrite but are not its own: those of another
    study or schedule, or files that no study wrote (a ``results.md`` or ``results.png``
    without a study's ``results.json``)."""
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        for name in ("results.md", "results.png"):
            if os.path.exists(os.path.join(out_dir, name)):
                raise ValueError(f"--output {out_dir!r} holds a {name} that no ablation study "
                                 "wrote (it has no results.json); this study would overwrite "
                                 "it: choose another --output")
        return
    found = _read_json(path)
    if not isinstance(found, dict) or not isinstance(found.get("study"), str):
        raise ValueError(f"--output {out_dir!r} holds a results.json that is not an ablation "
                         f"study's ({path}); this study would overwrite it: choose another "
                         "--output")
    if found["study"] != study_name:
        raise ValueError(f"--output {out_dir!r} holds the results of study {found['study']} "
                         f"({path}), which this run of study {study_name} would overwrite: "
                         "choose another --output")
    if found.get("schedule") != schedule_name:
        raise ValueError(f"--output {out_dir!r} holds the results of study {study_name} at "
                         f"schedule {found.get('schedule')} ({path}), which this run at "
                         f"schedule {schedule_name} would overwrite: choose another --output")


# the largest SEED a run can take: Detectron2 seeds numpy with it (32 bits)
MAX_SEED = 2**32 - 1


def parse_seeds(text: Optional[str]) -> List[int]:
    """``--seeds`` "0,1,2" as [0, 1, 2] (None: no repetition); an empty value, a value that
    is not a non-negative integer, or a repeated one, is a ValueError."""
    if text is None:
        return []
    if not text.strip():  # e.g. an unset shell variable
        raise ValueError(f"--seeds {text!r} is empty: give comma-separated integers >= 0 (e.g. "
                         "0,1), or leave --seeds out for one run per setting")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"--seeds={text!r} is invalid: use comma-separated integers >= 0, "
                             "e.g. 0,1,2")
        seeds.append(int(part))
    too_large = [seed for seed in seeds if seed > MAX_SEED]
    if too_large:  # numpy's seed, which Detectron2 sets from SEED, takes 32 bits
        raise ValueError(f"--seeds={text!r}: {too_large[0]} is too large: a seed is an integer "
                         f"in [0, {MAX_SEED}] (2**32 - 1)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds={text!r} repeats a seed: each seed is one run per setting")
    return seeds


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


class StudyInterrupted(Exception):
    """A signal (``signum``: SIGINT, SIGTERM or SIGHUP) stopped the study; its settings'
    processes have ended. A command exits with status 128 + ``signum`` (130 for Ctrl-C, 143 for
    SIGTERM)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the process group ``proc`` leads (``start_new_session``); to
    ``proc`` alone where there are no process groups. One that has ended is left alone."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass


class StudyRunner:
    """Trains the settings of a :func:`build_plan` plan, ``plan["workers"]`` at a time, each in
    its own process (``retina-focal train``), skipping those already done (resume), and
    rewrites the study's results after every setting with progress and an ETA.

    Args:
        plan: :func:`build_plan`'s output.
        command: the command line recorded in the results (how to run the study again).
    """

    def __init__(self, plan: Dict, command: str = ""):
        self.command = command
        self.workers: int = plan["workers"]
        self.study = plan["study"]
        self.schedule = plan["schedule"]
        self.runs = plan["runs"]
        # the study's runs finished in its folder that this command does not train: tabled
        # with its own (check_finished_runs); run folders that are not the study's
        self.tabled: List[Dict] = plan.get("tabled", [])
        self.foreign: List[str] = plan.get("foreign", [])
        self.overrides: List[Dict] = plan.get("overrides", [])
        self.solver: Dict = plan.get("solver", {})
        # --dataset NAME=JSON:IMAGE_DIR (absolute paths), registered by every setting's process
        self.datasets: List[str] = plan.get("datasets", [])
        # the metric named in progress lines: box AP, or proposal AR@100
        self.headline = TASK_METRICS[self.study.task][0]
        self.out_dir = plan["out_dir"]
        self.rows: Dict[str, Dict] = {}  # run label -> result row
        self.started = time.time()
        self.trained_walls: List[float] = []
        self.finished = 0
        # re-entrant: the signal handler (main thread) takes it, maybe while the thread has it
        self.lock = threading.RLock()
        # the settings' training processes running now, and the signal that stops the study
        self.procs: List[subprocess.Popen] = []
        self.stopping: Optional[int] = None
        # runs taken from records written before the key had the config's hash
        self.unchecked: Set[str] = set()
        self.config_file_arg: str = plan["config_file"]  # as given (resolved)
        self.config_file = os.path.abspath(self.config_file_arg)
        self.env = dict(os.environ)
        # children import the same retina_focal as this process
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(retina_focal.__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [pkg_root] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])
        if self.workers > 1 and "OMP_NUM_THREADS" not in self.env:
            # share the cores between the workers instead of oversubscribing them
            self.env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.workers))

    def run_dir(self, run) -> str:
        return os.path.join(self.out_dir, setting_dirname(run["index"], run["label"]))

    def signature(self, run) -> Dict:
        """The key of ``run`` (:func:`~retina_focal.ablation.records.run_signature`)."""
        return run["signature"]

    def load_done(self, run):
        """The saved result of ``run`` if it finished with the same resolved config; else the
        result of an identical run in this study's folder (a run made without ``--seeds`` is
        its ``SEED``'s run) or in another study's beside it (same parent directory), copied
        here; else None. A record without the config's hash (written before the key
        had it) is taken when its config file and overrides are the same, and said to be
        unchecked (in the log; a run of this folder in ``self.unchecked``)."""
        path = os.path.join(self.run_dir(run), RESULT_FILE)
        result = _read_json(path)
        match = None if result is None else compare_record(result, self.signature(run))
        if match is not None:
            # the metrics are read again from the run's own files where they are there
            metrics = read_final_metrics(self.run_dir(run), self.study.task)
            result = result if metrics is None else dict(result, metrics=metrics)
            result = self._timed(run, result, self.run_dir(run))
            if result is not None and match == LEGACY:
                self.unchecked.add(run["label"])
            return result
        if result is not None:  # refused when planned: the folder changed since
            raise made_otherwise(self.run_dir(run), run, result, planned=True)
        parent = os.path.dirname(os.path.abspath(self.out_dir))
        for other in sorted(glob.glob(os.path.join(parent, "*", "*", RESULT_FILE))):
            # this study's other runs too: a run without --seeds is the seed=SEED run
            if os.path.abspath(other) == os.path.abspath(path):
                continue
            found = _read_json(other)
            match = None if not isinstance(found, dict) else compare_record(
                found, self.signature(run))
            if match is not None:
                # the run that trained: a copy names it (its logs and model are there)
                origin = found.get("reused_from") or os.path.dirname(other)
                found = self._timed(run, dict(found, label=run["label"], reused_from=origin),
                                    os.path.dirname(other))
                if found is None:
                    return None
                os.makedirs(self.run_dir(run), exist_ok=True)
                atomic_write_json(path, found, indent=2)
                log(f"{run['label']!r}: the same run was already made in "
                    f"{origin}{_UNCHECKED if match == LEGACY else ''}; its result is reused")
                return found
        return None

    def _timed(self, run, result: Dict, run_dir: str) -> Optional[Dict]:
        """``result`` with the run's inference time per image in a timed study: its own if it
        has one, else read from ``run_dir``'s log; None (train it again) if the log has none.
        ``result`` unchanged in other studies."""
        if not self.study.timed or result.get("inference_s_per_image") is not None:
            return result
        try:
            return dict(result, inference_s_per_image=read_inference_time(run_dir))
        except (OSError, ValueError) as e:
            log(f"{run['label']!r}: {e}; retraining")
            return None

    def row(self, run, status, result=None) -> Dict:
        seed = {} if run["seed"] is None else {"setting": run["setting"].label,
                                               "seed": run["seed"]}
        setting = run["setting"]
        timed = {} if not self.study.timed else {
            "inference_s_per_image": (result or {}).get("inference_s_per_image"),
            "paper_ms": setting.paper_ms, "curve": list(setting.curve or ()) or None}
        return {"label": run["label"], **seed, "paper_ap": setting.paper_ap,
                "status": status, "metrics": (result or {}).get("metrics"),
                "wall_s": (result or {}).get("wall_s"), **timed, "overrides": run["opts"],
                "output_dir": self.run_dir(run)}

    def all_runs(self) -> List[Dict]:
        """The runs of the results: this command's and the study's other runs finished in its
        folder (those that are done), in study order (setting, then seed)."""
        runs = self.runs + [r for r in self.tabled if r["label"] in self.rows]
        return sorted(runs, key=lambda r: (r["index"], -1 if r["seed"] is None else r["seed"]))

    def write(self) -> Dict[str, str]:
        rows = [self.rows.get(r["label"]) or self.row(r, "pending") for r in self.all_runs()]
        header = {
            "command": self.command,
            "config_file": self.config_file_arg,
            "schedule": self.schedule.name,
            "schedule_description": self.schedule.description,
            "schedule_overrides": resolve_overrides(self.schedule.overrides, None),
            # the command line's, each with the schedule's value of its key if it has one
            "overrides": self.overrides,
            # what ran (the schedule's description does not know the overrides)
            "solver": self.solver,
            "datasets": self.datasets,
            "workers": self.workers,
        }
        with self.lock:
            return write_results(self.study, rows, self.out_dir, header)

    def progress(self, label: str, what: str) -> None:
        with self.lock:
            self.finished += 1
            done, total = self.finished, len(self.runs)
            remaining = total - done
            if self.trained_walls and remaining:
                mean = sum(self.trained_walls) / len(self.trained_walls)
                eta = mean * -(-remaining // self.workers)
                eta_text = f", study ETA {_fmt_s(eta)} ({_fmt_s(mean)} per setting)"
            else:
                eta_text = ""
        log(f"{done}/{total} settings finished ({label!r} {what}); elapsed "
            f"{_fmt_s(time.time() - self.started)}{eta_text}")

    def train(self, run) -> None:
        if self.stopping is not None:  # the study is stopping: no new setting starts
            return
        label = run["label"]
        out = self.run_dir(run)
        if os.path.exists(out):  # an unfinished run (no record): start it again from scratch
            log(f"{label!r}: {out} holds an unfinished run (no {RESULT_FILE}); it is trained "
                "again from scratch, its files replaced")
            shutil.rmtree(out)
        os.makedirs(out)
        # the engine's training run, in a process of its own (its threads, memory and
        # output stay its own; the log is the process's output)
        cmd = [sys.executable, "-c", TRAIN_PROGRAM, self.config_file, *self.datasets, "--",
               *run["opts"], "OUTPUT_DIR", out]
        t0 = time.time()
        log_path = os.path.join(out, "train_stdout.txt")
        lines = ["$ " + shlex.join(cmd) + "\n"]  # a line that pastes into a shell
        with open(log_path, "w") as logf:
            logf.write(lines[0])
            logf.flush()
            with self.lock:  # a stop (signal) sees every process started
                if self.stopping is not None:
                    return
                # its own process group (session): a Ctrl-C at the terminal reaches the runner
                # alone, which stops the group (the run and its data-loading workers)
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=self.env, bufsize=1,
                                        start_new_session=True)
                self.procs.append(proc)
            log(f"start {label!r} (setting {run['index']} of study {self.study.name}) -> {out} "
                f"(process {proc.pid})")
            try:
                assert proc.stdout is not None  # stdout=PIPE
                for line in proc.stdout:
                    logf.write(line)
                    logf.flush()
                    lines.append(line)
                    if ECHO.search(line) and self.stopping is None:
                        with _print_lock:
                            print(f"  [{label}] {line.rstrip()}", flush=True)
                code = proc.wait()
            finally:
                with self.lock:
                    self.procs.remove(proc)
        if self.stopping is not None:  # stopped by a signal: neither a result nor a failure
            return
        # written whole again: a run refused before it started puts its output directory
        # back as it found it, which would leave this log as it was then (empty)
        atomic_write_text(log_path, "".join(lines))
        tail = lines[-40:]
        wall = time.time() - t0
        metrics = read_final_metrics(out, self.study.task) if code == 0 else None
        timing: Dict = {}
        if metrics is not None and self.study.timed:
            try:
                timing = {"inference_s_per_image": read_inference_time(out)}
            except (OSError, ValueError) as e:
                log(f"{label!r} FAILED: {e}")
                metrics = None
        if metrics is None:
            log(f"{label!r} FAILED (exit code {code}; see {out}/train_stdout.txt). Last lines:\n"
                + "".join(tail[-25:]))
            self.rows[run["label"]] = self.row(run, "failed", {"wall_s": wall})
            self.progress(label, "failed")
            self.write()
            return
        result = {"label": label, "metrics": metrics, **timing, "wall_s": wall,
                  "signature": self.signature(run), "command": cmd,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  # the resolved config the key hashes: a later mismatch says what differs
                  "config": run["config"]}
        # its presence means "complete"
        atomic_write_json(os.path.join(out, RESULT_FILE), result, indent=2)
        with self.lock:
            self.trained_walls.append(wall)
        self.rows[run["label"]] = self.row(run, "done", result)
        headline = metrics[self.headline]
        self.progress(label, f"{self.headline} {headline:.1f} in {wall:.0f} s"
                      if headline is not None else f"done in {wall:.0f} s")
        self.write()

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While the settings train: SIGINT (Ctrl-C), SIGTERM or SIGHUP stops every setting's
        process (:meth:`stop`) and raises :class:`StudyInterrupted`; the finished settings
        keep their records, an interrupted one has none (it is trained again on resume).
        Only in the main thread (where Python runs signal handlers), and not for a signal this
        process ignores (``nohup``'s SIGHUP)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum, frame):
            if self.stopping is not None:  # a second signal while stopping
                return
            self.stopping = signum
            self.stop()
            raise StudyInterrupted(signum)

        # a signal ignored (nohup's SIGHUP, SIGINT of a background job) stays ignored
        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS
                    if signal.getsignal(sig) != signal.SIG_IGN}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the settings' processes: SIGTERM to each one's process group, SIGKILL to those
        still running ``grace_s`` seconds later; return when every one has ended."""
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
                proc.wait()

    def run(self) -> int:
        """Train what is not done, then write the results; 0 when every setting finished, 1
        if one failed. A signal stops it (:meth:`stop_on_signals`): StudyInterrupted."""
        with self.stop_on_signals():
            return self._run()

    def _run(self) -> int:
        os.makedirs(self.out_dir, exist_ok=True)
        todo = []
        for run in self.runs:
            result = self.load_done(run)
            if result is not None:
                self.rows[run["label"]] = self.row(run, "done", result)
                log(f"{run['label']!r}: already done ({self.run_dir(run)}/{RESULT_FILE}, "
                    f"{self.headline} {result['metrics'][self.headline]}), skipped"
                    + (_UNCHECKED if run["label"] in self.unchecked else ""))
                self.finished += 1
            else:
                todo.append(run)
        for run in self.tabled:  # finished before, with the same settings (checked)
            result = self.load_done(run)
            if result is not None:
                self.rows[run["label"]] = self.row(run, "done", result)
                log(f"{run['label']!r}: finished before ({self.run_dir(run)}/{RESULT_FILE}, "
                    f"{self.headline} {result['metrics'][self.headline]}), in the results "
                    "with this command's runs"
                    + (_UNCHECKED if run["label"] in self.unchecked else ""))
        for run_dir in self.foreign:
            log(f"{run_dir} holds a finished run that is not one of study {self.study.name}'s "
                "settings: it is left out of the results")
        log(f"study {self.study.name} ({self.study.title}), schedule {self.schedule.name}: "
            f"{len(todo)} of {len(self.runs)} settings to train, {self.workers} worker(s), "
            f"output {self.out_dir}")
        self.write()
        if self.study.timed and self.workers > 1 and len(todo) > 1:
            log(f"study {self.study.name} times inference: with {self.workers} workers "
                "the settings share the cores while they are timed; use --workers 1 (on an "
                "otherwise idle machine) for times that compare")
        if self.workers == 1:
            for run in todo:
                self.train(run)
        else:
            pool = ThreadPoolExecutor(max_workers=self.workers)
            try:
                for fut in [pool.submit(self.train, run) for run in todo]:
                    fut.result()
            finally:  # after a stop, the settings not started are dropped
                pool.shutdown(wait=True, cancel_futures=True)
        paths = self.write()
        with open(paths["md"]) as f:
            print(f.read(), flush=True)
        log(f"wrote {', '.join(paths.values())} in {_fmt_s(time.time() - self.started)}")
        failed = [r["label"] for r in self.rows.values() if r["status"] != "done"]
        if failed:
            log(f"{len(failed)} setting(s) failed: {failed}")
            return 1
        return 0
