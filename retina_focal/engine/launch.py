"""Start one process per device, on GPUs with Detectron2's launcher, on CPUs with GLOO.

Detectron2 0.6's ``launch`` asserts CUDA and uses NCCL, so ``--num-gpus 2`` cannot run on a
CPU-only machine. :func:`launch` keeps Detectron2's signature and behaviour on GPU machines;
when CUDA is unavailable it spawns the processes itself, joins them into one GLOO process group
(``tcp://`` or ``file://`` rendezvous, several machines allowed) and creates Detectron2's
per-machine process group, so ``detectron2.utils.comm`` (``get_local_rank``, ``gather``,
``synchronize``) works as under Detectron2's launcher.

Its CPU worker processes die with the launching process (a SIGKILL of the command leaves no
worker training on), and a :class:`~retina_focal.utils.errors.UserError` in any of them
ends the command with its one ``error:`` line, as in a run of one process.
"""
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.queues import SimpleQueue
from typing import Any, Callable, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException, spawn

from retina_focal.utils.compat import release_local_process_group, set_local_process_group
from retina_focal.utils.errors import UserError, wants_traceback

__all__ = ["InvalidLaunch", "LaunchSettings", "WorkerUserError", "launch", "launch_run",
           "leave_process_group", "DEFAULT_TIMEOUT"]


class InvalidLaunch(UserError, ValueError):
    """Process or machine counts that cannot run (the message names the options)."""


class WorkerUserError(UserError):
    """A worker process's :class:`UserError` (or ``error:`` exit), raised again in the
    launching process with the worker's message."""


DEFAULT_TIMEOUT = timedelta(minutes=30)

_T = TypeVar("_T")


def launch(main_func: Callable[..., _T], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Tuple[Any, ...] = (),
           timeout: timedelta = DEFAULT_TIMEOUT) -> Optional[_T]:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of
    ``num_machines`` machines (call it on every machine with its ``machine_rank``).

    On a machine without CUDA, ``num_gpus_per_machine`` is the number of CPU processes.
    ``dist_url``: ``tcp://HOST:PORT`` of machine 0 (same on every machine), a ``file://``
    path on a file system all machines share, or ``"auto"`` (one machine only).

    On CPUs ``"auto"`` meets in a new file of a private temporary directory rather than on a
    "free" TCP port: a port found free here could be taken by another program before the
    first process binds it, a file cannot.

    Returns what ``main_func`` returns where it runs in this process (on CPUs, one process on
    this machine), else ``None``.
    """
    if torch.cuda.is_available():
        from detectron2.engine import launch as d2_launch

        d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                  machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout)
        return None  # Detectron2's launch returns nothing
    if num_gpus_per_machine < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise InvalidLaunch(
            f"Invalid launch: --num-gpus {num_gpus_per_machine}, --num-machines {num_machines}, "
            f"--machine-rank {machine_rank} (need >= 1 processes, >= 1 machines, "
            "0 <= machine rank < machines)"
        )
    world_size = num_gpus_per_machine * num_machines
    if world_size == 1:
        return main_func(*args)
    rendezvous_dir = None
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise InvalidLaunch("--dist-url auto works on one machine only; give every machine "
                                "the same tcp://HOST:PORT of machine 0")
        rendezvous_dir = tempfile.mkdtemp(prefix="retina_focal_rendezvous_")
        dist_url = "file://" + os.path.join(rendezvous_dir, "store")
    print(f"CUDA is not available: starting {num_gpus_per_machine} CPU process(es) "
          f"(GLOO, {dist_url}, world size {world_size})", file=sys.stderr, flush=True)
    # spawned workers' user errors, to end this command with one error line
    errors: Optional["SimpleQueue[str]"] = (
        None if num_gpus_per_machine == 1 else mp.get_context("spawn").SimpleQueue())
    worker_args = (main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                   timeout, errors)
    try:
        if num_gpus_per_machine == 1:  # one process on this machine: this one
            return _cpu_worker(0, *worker_args)
        spawn(  # type: ignore[no-untyped-call]  # torch's spawn has no annotations
            _cpu_worker,
            nprocs=num_gpus_per_machine,
            args=worker_args,
            daemon=False,
        )
    except (ProcessRaisedException, ProcessExitedException):
        if errors is not None and not errors.empty():
            raise WorkerUserError(errors.get()) from None
        raise
    finally:
        if rendezvous_dir is not None:
            shutil.rmtree(rendezvous_dir, ignore_errors=True)
    return None  # the spawned processes' results stay in them


@dataclass(frozen=True)
class LaunchSettings:
    """The processes of a run, as Detectron2's ``default_argument_parser`` gives them:
    ``--num-gpus`` (processes per machine), ``--num-machines``, ``--machine-rank``,
    ``--dist-url`` (see :func:`launch`)."""

    num_gpus: int
    num_machines: int
    machine_rank: int
    dist_url: str


def launch_run(main_func: Callable[..., _T], args: Tuple[Any, ...],
               settings: LaunchSettings) -> Optional[_T]:
    """``main_func(*args)`` in every process that ``settings`` asks for, with :func:`launch`.
    ``main_func`` must be importable (a module-level function of the package), so that
    spawned worker processes can unpickle it."""
    return launch(
        main_func,
        settings.num_gpus,
        num_machines=settings.num_machines,
        machine_rank=settings.machine_rank,
        dist_url=settings.dist_url,
        args=args,
    )


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the process that started it dies (torch's
    spawn asks for SIGINT, which a busy worker does not act on)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _cpu_worker(local_rank: int, main_func: Callable[..., _T], world_size: int,
                num_per_machine: int, machine_rank: int, dist_url: str, args: Tuple[Any, ...],
                timeout: timedelta, errors: Optional["SimpleQueue[str]"] = None) -> _T:
    if errors is not None:  # a spawned worker
        _die_with_parent()
        try:
            return _cpu_worker_body(local_rank, main_func, world_size, num_per_machine,
                                    machine_rank, dist_url, args, timeout)
        except UserError as e:
            if wants_traceback():
                raise
            message = str(e)
        except SystemExit as e:  # a command's own "error: ..." exit
            if not (isinstance(e.code, str) and e.code.startswith("error: ")):
                raise
            message = e.code[len("error: "):]
        errors.put(message)
        sys.exit(1)
    return _cpu_worker_body(local_rank, main_func, world_size, num_per_machine, machine_rank,
                            dist_url, args, timeout)


def _cpu_worker_body(local_rank: int, main_func: Callable[..., _T], world_size: int,
                     num_per_machine: int, machine_rank: int, dist_url: str,
                     args: Tuple[Any, ...], timeout: timedelta) -> _T:
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                                rank=global_rank, timeout=timeout)
    except Exception as e:
        raise RuntimeError(f"Process {global_rank} could not join the process group at "
                           f"{dist_url}: {e}") from e
    set_local_process_group(num_per_machine, machine_rank, world_size)
    # share the machine's cores between its processes instead of oversubscribing them
    threads = max(1, (os.cpu_count() or 1) // num_per_machine)
    torch.set_num_threads(min(torch.get_num_threads(), threads))
    comm.synchronize()
    try:
        result = main_func(*args)
    except BaseException:
        leave_process_group()
        raise
    # Every process finishes before any tears the group down: a GLOO peer whose connections
    # close under it while it still talks (e.g. the last gather of an evaluation) aborts
    # ("terminate called without an active exception").
    comm.synchronize()
    leave_process_group()
    return result


def leave_process_group() -> None:
    """Destroy this process's process groups and drop every reference Detectron2 caches to
    them, so that their GLOO objects are freed now: one freed at interpreter shutdown can
    abort the process ("terminate called without an active exception") after its work is
    done."""
    dist.destroy_process_group()
    release_local_process_group()
