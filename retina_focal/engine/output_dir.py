"""One run per output directory: a training or evaluation run owns its ``OUTPUT_DIR``
(``train.output_dir``) while it runs.

Two runs writing into one directory (two shells, or a re-run while the first is alive) would
overwrite each other's checkpoints and evaluation results and interleave ``metrics.json`` and
``log.txt``, and both would exit 0. So :func:`claim_output_dir`, called by ``setup_cfg`` /
``setup_lazy_cfg`` before anything is written there, takes a lock file
(``OUTPUT_DIR/.retina_focal.lock``: host, pid, start time and command of the run), created
atomically (``O_CREAT | O_EXCL``, which also holds on NFS). A second run stops with
:class:`OutputDirInUse` naming the first one.

* The lock is released (the file removed) when the run ends: by the commands when they return
  or raise, and in any case when the process exits.
* A run killed before it could release it (SIGKILL, power loss) leaves a stale lock: a lock of
  this host whose process is gone is reported and taken over, so ``--resume`` after a crash
  needs no clean-up. A lock of another host cannot be checked from here: it is obeyed, and
  the message says which file to delete if that run is gone.
* Only the main process (rank 0) of a multi-process run takes the lock; the others write
  nothing there that would conflict (their ``log.txt.rankN`` are theirs).
* Taking the directory also removes the temporary files of interrupted atomic writes (a run
  killed while saving a checkpoint, see :mod:`retina_focal.utils.file_io`): only files named
  as those are, at the top of the directory, where checkpoints go.

A training run also must not lose or mislabel the run already in the directory
(:func:`check_training_start`, before anything is written): training from scratch where a
run's checkpoints are is refused (``--resume`` continues it), and so is resuming a run on
datasets with other class names than the ones its checkpoint was trained on.

Within one process the lock is re-entrant (a command run twice in one Python session, e.g.
train then ``--eval-only`` into the same directory, does not lock itself out).
"""
import atexit
import datetime
import json
import logging
import os
import shlex
import socket
import sys
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

from detectron2.utils import comm
from torch import nn

from retina_focal.data.class_map import ClassMap, format_class_map
from retina_focal.engine.checkpoint import (
    CheckpointNotFound,
    RetinaFocalCheckpointer,
    is_exported_path,
    read_resume_point,
)
from retina_focal.utils.errors import UserError
from retina_focal.utils.file_io import atomic_write_bytes, is_local_path, is_temporary_file

__all__ = [
    "LOCK_FILE",
    "OutputDirInUse",
    "OutputDirLock",
    "TrainingRefused",
    "check_evaluation_start",
    "check_training_start",
    "check_weights_readable",
    "keep_run_config",
    "claim_output_dir",
    "log_to_output_dir",
    "release_output_dir",
    "remove_leftover_temporaries",
    "rollback_output_dir",
    "snapshot_output_dir",
    "start_output_dir",
]

logger = logging.getLogger(__name__)

LOCK_FILE = ".retina_focal.lock"

# a stale lock can be taken over by another starting run at the same moment: retry a little
_ACQUIRE_ATTEMPTS = 3


class OutputDirInUse(UserError, RuntimeError):
    """The output directory belongs to another run that is (or may be) alive."""


class TrainingRefused(UserError, RuntimeError):
    """A training run that would replace or mislabel the run already in its output directory."""


def _this_host() -> str:
    return socket.gethostname()


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host (a zombie counts as gone). Where that
    cannot be known (Windows: ``os.kill(pid, 0)`` would signal it), it is assumed alive."""
    if os.name == "nt" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: another user's process, alive
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _describe(owner: Optional[Dict[str, Any]]) -> str:
    if not owner:
        return "an unknown run (its lock file is empty or unreadable)"
    return (f"host {owner.get('host')!s}, pid {owner.get('pid')!s}, started "
            f"{owner.get('started')!s}, command: {owner.get('command')!s}")


class OutputDirLock:
    """The lock file of one output directory, as held by this process."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.owner = {
            "host": _this_host(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable] + sys.argv),
        }
        self._text = json.dumps(self.owner)
        # this process's claim created the directory (set by _claim); a run refused before it
        # started then removes it, empty by then, once it lets the lock go
        self.created = False
        self.remove_on_release = False

    def _read(self) -> Optional[str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(text: str) -> Optional[Dict[str, Any]]:
        try:
            owner = json.loads(text)
        except ValueError:
            return None
        return owner if isinstance(owner, dict) else None

    def _stale(self, owner: Optional[Dict[str, Any]]) -> bool:
        """A lock of this host whose process is gone, or one with this process's pid that this
        process does not hold (a previous process of the same pid: pids are reused)."""
        if not owner or owner.get("host") != self.owner["host"]:
            return False
        pid = owner.get("pid")
        if not isinstance(pid, int):
            return False
        if pid == os.getpid():
            return True  # held by this process would have been found in _HELD
        return _process_gone(pid)

    def acquire(self) -> None:
        """Create the lock file, taking over a stale one; raise :class:`OutputDirInUse` if a
        live (or unverifiable) run holds it."""
        for _ in range(_ACQUIRE_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                text = self._read()
                if text is None:
                    continue  # released meanwhile
                owner = self._parse(text)
                if not self._stale(owner):
                    raise OutputDirInUse(self._in_use_message(owner)) from None
                # remove it only if no other starting run replaced it since we read it
                if self._read() == text:
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    logger.warning(
                        f"{self.output_dir}: taking over the lock of a run that ended without "
                        f"releasing it (killed?): {_describe(owner)}; that process no longer "
                        "exists"
                    )
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self._text)
            return
        raise OutputDirInUse(f"Could not lock the output directory {self.output_dir}: other "
                             f"runs keep taking its lock file {self.path}")

    def _in_use_message(self, owner: Optional[Dict[str, Any]]) -> str:
        return (
            f"The output directory {self.output_dir} is in use by another run: "
            f"{_describe(owner)} (lock file {self.path}). Two runs in one directory overwrite "
            "each other's checkpoints and results: wait for it to end, or give this run "
            "another output directory (OUTPUT_DIR / train.output_dir); if that run no longer "
            f"exists (another host's, or its pid now belongs to another program), delete "
            f"{self.path}."
        )

    def release(self) -> None:
        """Remove the lock file, if it is still this process's."""
        if os.getpid() != self.owner["pid"]:
            return  # a forked child (e.g. a data-loader worker) does not own it
        if self._read() == self._text:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


# output directory (real path) -> the lock this process holds there
_HELD: Dict[str, OutputDirLock] = {}


def _key(output_dir: str) -> str:
    return os.path.realpath(os.path.abspath(output_dir))



def remove_leftover_temporaries(output_dir: str) -> int:
    """Remove the temporary files interrupted atomic writes left at the top of ``output_dir``
    (names as :func:`retina_focal.utils.file_io.temporary_path` makes them, nothing else);
    return how many. Call it only while holding the directory: a live writer's temporary file
    has the same kind of name."""
    removed = []
    for entry in os.scandir(output_dir):
        if entry.is_file(follow_symlinks=False) and is_temporary_file(entry.name):
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.name)
    if removed:
        logger.warning(f"{output_dir}: removed {len(removed)} temporary file(s) left by an "
                       f"interrupted write (a run killed while saving): {', '.join(removed)}")
    return len(removed)


def _claim(output_dir: str) -> OutputDirLock:
    key = _key(output_dir)
    if key in _HELD:
        return _HELD[key]
    created = not os.path.isdir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    lock = OutputDirLock(output_dir)
    lock.created = created
    lock.acquire()
    _HELD[key] = lock
    remove_leftover_temporaries(output_dir)
    return lock


def claim_output_dir(output_dir: str, check: Optional[Callable[[], None]] = None
                     ) -> Optional[OutputDirLock]:
    """Make ``output_dir`` this run's: create it, lock it (see the module doc) and remove the
    temporary files of interrupted writes. Return the lock, or ``None`` where nothing is
    locked: processes other than the main one, an empty ``output_dir``, a remote one
    (``scheme://``).

    ``check`` (e.g. :func:`check_training_start`) runs on the main process once the
    directory is held, before anything else is written there; a :class:`UserError` it raises
    releases the directory and stops every process with it.

    Every process of a run calls it (it is collective when there are several): if the main
    process cannot take the directory, all of them stop, before any writes its own log there.

    Raises:
        OutputDirInUse: another run holds the directory (the message names it).
    """
    lock, refused = None, None
    if output_dir and is_local_path(output_dir) and comm.is_main_process():
        try:
            lock = _claim(output_dir)
            if check is not None:
                check()
        except UserError as e:
            _remove_on_release(output_dir)
            release_output_dir(output_dir)
            lock, refused = None, e
    if comm.get_world_size() > 1:
        refused = comm.all_gather(refused)[0]
    if refused is not None:
        raise refused
    return lock


def release_output_dir(output_dir: str) -> None:
    """Release the lock this process holds on ``output_dir`` (nothing if it holds none)."""
    if output_dir and is_local_path(output_dir):
        lock = _HELD.pop(_key(output_dir), None)
        if lock is not None:
            lock.release()
            if lock.remove_on_release:
                try:
                    os.rmdir(output_dir)  # only where nothing is left in it
                except OSError:
                    pass


def _remove_on_release(output_dir: str) -> None:
    """A refused run: the directory its claim created goes when it is released (if empty)."""
    lock = _HELD.get(_key(output_dir))
    if lock is not None and lock.created:
        lock.remove_on_release = True


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        _HELD.pop(key).release()


def log_to_output_dir(output_dir: str) -> None:
    """Send the ``retina_focal`` loggers to the run's ``log.txt`` (and the console), as
    Detectron2's ``default_setup`` does for its own: a run's warnings (a lock taken over,
    temporaries removed, skipped images) then stay with its log."""
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    logger = setup_logger(output_dir or None, distributed_rank=comm.get_rank(),
                          name="retina_focal")
    logger.propagate = True  # as before: handlers the user (or pytest) put on the root see it


# what a training run leaves in its output directory that training from scratch would replace
_LAST_CHECKPOINT = "last_checkpoint"  # Detectron2's pointer to a run's latest checkpoint
_RUN_FILES = (_LAST_CHECKPOINT, "model_final.pth")


def check_training_start(output_dir: str, *, resume: bool,
                         class_map: Union[None, ClassMap, Callable[[], Optional[ClassMap]]],
                         classes_desc: str, output_key: str = "OUTPUT_DIR",
                         max_iter: Optional[int] = None,
                         max_iter_key: str = "SOLVER.MAX_ITER", weights: str = "",
                         weights_key: str = "MODEL.WEIGHTS") -> None:
    """Refuse a training run, before it writes anything, that would lose or mislabel the run
    already in ``output_dir``:

    * without ``resume``: initial ``weights`` that do not exist or cannot be read;
    * without ``resume``: the directory holds a run's checkpoints (``last_checkpoint``,
      ``model_final.pth``), which training from scratch would replace;
    * with ``resume``: the checkpoint it would resume from was trained on classes with other
      names (or another count) than ``class_map``, the classes of the datasets this run trains
      on (``classes_desc`` names them in the message; a callable is called only when the
      checkpoint has a class map to compare): every output would go on meaning the old
      class under the new name. A checkpoint without a class map (Detectron2's) is not
      checked here (its class count is, when it is loaded);
    * with ``resume``: the checkpoint has trained more iterations than ``max_iter`` (the run
      would only evaluate again and log it as a later iteration).

    Raises:
        TrainingRefused: the message names the directory or checkpoint, both class lists and
            the fix (``--resume``, another ``output_key``).
    """
    if not resume:
        check_weights_readable(weights, weights_key)
    if not output_dir or not is_local_path(output_dir) or not os.path.isdir(output_dir):
        return
    if not resume:
        found = _run_files(output_dir)
        if found:
            raise TrainingRefused(
                f"{output_dir} already holds a training run ({', '.join(found)}): training "
                "from scratch there would replace its checkpoints. Continue that run with "
                f"--resume, or give this one another output directory ({output_key}), or "
                "delete those files first")
        return
    checkpoint, saved, iteration = read_resume_point(output_dir)
    if iteration is not None and max_iter is not None and iteration + 1 > max_iter:
        raise TrainingRefused(
            f"Cannot resume {checkpoint}: it has trained {iteration + 1} iterations, more than "
            f"{max_iter_key}={max_iter}. Raise {max_iter_key} to train it further, or evaluate "
            "it with --eval-only")
    if saved is None:
        return
    class_map = class_map() if callable(class_map) else class_map
    if class_map is None or [c["name"] for c in saved] == [c["name"] for c in class_map]:
        return
    raise TrainingRefused(
        f"Cannot resume {checkpoint}: it was trained on other classes than {classes_desc}; "
        "resuming would keep the old classes' weights under the new names.\n"
        f"  checkpoint ({len(saved)}): {format_class_map(saved)}\n"
        f"  {classes_desc} ({len(class_map)}): {format_class_map(class_map)}\n"
        "Resume with the datasets the run was trained on, or start a new run in another "
        f"output directory ({output_key}), with the checkpoint as its initial weights to "
        "fine-tune from it")


def _run_files(output_dir: str) -> List[str]:
    return [n for n in _RUN_FILES if os.path.exists(os.path.join(output_dir, n))]


def check_weights_readable(weights: str, key: str = "MODEL.WEIGHTS") -> None:
    """Raise :class:`CheckpointNotFound` / :class:`CheckpointReadError` (naming ``key`` and the
    file) unless ``weights`` is empty, remote, an exported model (read by its own runtime) or a
    checkpoint that can be read; called before a run writes anything."""
    if not weights or not is_local_path(weights) or is_exported_path(weights):
        return
    if not os.path.isfile(weights):
        raise CheckpointNotFound(f"Cannot load the checkpoint ({key}): file {weights!r} does "
                                 "not exist")
    RetinaFocalCheckpointer(nn.Module(), save_dir="").read_file(weights)  # reads, loads nothing


def check_evaluation_start(output_dir: str, weights: str, *, resume: bool = False,
                           weights_key: str = "MODEL.WEIGHTS",
                           output_key: str = "OUTPUT_DIR") -> None:
    """Refuse an evaluation-only run, before it writes anything, that would fail on its
    checkpoint or overwrite another model's results:

    * no ``weights`` (and no run in ``output_dir`` to ``resume``): it would score an
      untrained model;
    * ``weights`` that do not exist or cannot be read as a checkpoint (exported models,
      ``.onnx`` / ``.pt2`` / ``.ts``, are read by their own runtime and not checked here);
    * an ``output_dir`` that holds a training run while ``weights`` is not one of that run's
      checkpoints (nor ``resume``, which evaluates the run's last one): its ``inference/``
      results would be replaced by another model's.

    Raises:
        CheckpointNotFound, CheckpointReadError: the weights (named).
        TrainingRefused: the directory holds another run (named, with the fix).
    """
    if not weights and not (resume and output_dir and os.path.isfile(
            os.path.join(output_dir, _LAST_CHECKPOINT))):
        # a LazyConfig key (lower case) is set as key=value, a YAML one as KEY VALUE
        example = f"{weights_key}{'=' if weights_key.islower() else ' '}output/model_final.pth"
        article = "an" if output_key[:1].lower() in "aeiou" else "a"
        raise CheckpointNotFound(
            f"{weights_key} is empty: an evaluation needs the checkpoint to evaluate (e.g. "
            f"`{example}`), or --resume with {article} {output_key} holding a run (its last "
            "checkpoint); without one it would score an untrained model")
    if not resume:
        check_weights_readable(weights, weights_key)
    if not output_dir or not is_local_path(output_dir) or not os.path.isdir(output_dir) or resume:
        return
    found = _run_files(output_dir)
    own = weights and os.path.realpath(weights).startswith(os.path.realpath(output_dir) + os.sep)
    if found and weights and not own:
        raise TrainingRefused(
            f"{output_dir} holds a training run ({', '.join(found)}); evaluating another "
            f"checkpoint ({weights}) there would replace that run's inference results. Give "
            f"this evaluation its own output directory ({output_key}; --output for "
            "retina-focal eval)")


_RUN_CONFIG = "config.yaml"
_EVAL_CONFIG = "config_eval.yaml"


class keep_run_config:
    """Context manager for an evaluation-only run's setup in ``output_dir``: Detectron2's
    ``default_setup`` writes the run's config to ``config.yaml``, which in a training run's
    directory is that run's record. When the directory holds a training run, the training
    config is put back on exit and the evaluation's is kept as ``config_eval.yaml``."""

    def __init__(self, output_dir: str, active: bool = True):
        self.path = os.path.join(output_dir, _RUN_CONFIG) if output_dir else ""
        self.active = bool(active and output_dir and is_local_path(output_dir)
                           and comm.is_main_process() and os.path.isdir(output_dir)
                           and _run_files(output_dir) and os.path.isfile(self.path))
        self.kept: Optional[bytes] = None

    def __enter__(self) -> "keep_run_config":
        if self.active:
            with open(self.path, "rb") as f:
                self.kept = f.read()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.kept is None:
            return False
        with open(self.path, "rb") as f:
            written = f.read()
        if written != self.kept:
            eval_path = os.path.join(os.path.dirname(self.path), _EVAL_CONFIG)
            atomic_write_bytes(eval_path, written)
            atomic_write_bytes(self.path, self.kept)
        return False


# files a run's setup writes or appends to before it starts (Detectron2's default_setup, the
# event writers): restored byte for byte when the run is refused before it starts
_SMALL_FILE_LIMIT = 16 * 2**20


class _Snapshot:
    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.existed = os.path.isdir(output_dir)
        self.files: Dict[str, Tuple[int, int]] = {}  # size, mtime (ns)
        self.contents: Dict[str, bytes] = {}
        if self.existed:
            for root, _, names in os.walk(output_dir):
                for name in names:
                    path = os.path.join(root, name)
                    if name == LOCK_FILE:
                        continue
                    st = os.stat(path)
                    self.files[path] = (st.st_size, st.st_mtime_ns)
                    if st.st_size <= _SMALL_FILE_LIMIT:
                        with open(path, "rb") as f:
                            self.contents[path] = f.read()

    def restore(self) -> None:
        for root, dirs, names in os.walk(self.output_dir, topdown=False):
            for name in names:
                path = os.path.join(root, name)
                if name == LOCK_FILE:
                    continue
                if path not in self.files:
                    os.remove(path)
                    continue
                st = os.stat(path)
                if (st.st_size, st.st_mtime_ns) != self.files[path] and path in self.contents:
                    atomic_write_bytes(path, self.contents[path])
            for d in dirs:
                full = os.path.join(root, d)
                if not os.listdir(full):
                    os.rmdir(full)


# output directory -> its state when the run took it, until the run starts (or is refused)
_SNAPSHOTS: Dict[str, _Snapshot] = {}


def snapshot_output_dir(output_dir: str) -> None:
    """Remember ``output_dir``'s files before a run's setup writes there (main process,
    local directories): :func:`rollback_output_dir` puts them back if the run is refused
    before it starts (:func:`start_output_dir` says it has)."""
    if output_dir and is_local_path(output_dir) and comm.is_main_process():
        _SNAPSHOTS[_key(output_dir)] = _Snapshot(output_dir)


def start_output_dir(output_dir: str) -> None:
    """The run has started (its model is built and loaded): what it writes from now on is
    its own output, kept whatever happens."""
    if output_dir:
        _SNAPSHOTS.pop(_key(output_dir), None)


def rollback_output_dir(output_dir: str) -> None:
    """A run refused before it started (a :class:`UserError` while its model was built or
    loaded): restore ``output_dir`` as it was when the run took it (config.yaml, log.txt, no
    new event or metrics files), so that a refused run changes no file there; a directory the
    run's claim created is removed when it is released (:func:`release_output_dir`)."""
    snapshot = _SNAPSHOTS.pop(_key(output_dir), None) if output_dir else None
    if snapshot is None:
        return
    snapshot.restore()
    _remove_on_release(output_dir)  # a directory the run created: removed with its lock
