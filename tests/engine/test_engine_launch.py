"""The CPU launcher: with ``--dist-url auto`` the processes meet in a private file, not on a
TCP port found free beforehand (which another program could take before they bind it)."""
import os
import re

import pytest
import torch

from retina_focal.engine.launch import launch


def _all_reduce_ranks(out_dir):
    """Run in every launched process: the sum of the ranks, as this process sees it."""
    import torch.distributed as dist
    from detectron2.utils import comm

    total = torch.tensor([comm.get_rank()])
    dist.all_reduce(total)
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}"), "w") as f:
        f.write(f"{int(total)} {comm.get_world_size()} {comm.get_local_rank()}")


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="with CUDA, Detectron2's own launcher runs (NCCL on a TCP port)")
def test_auto_dist_url_meets_in_a_private_file_and_removes_it(tmp_path, capfd):
    launch(_all_reduce_ranks, 2, dist_url="auto", args=(str(tmp_path),))
    err = capfd.readouterr().err
    url = re.search(r"starting 2 CPU process\(es\) \(GLOO, (\S+), world size 2\)", err)
    assert url and url.group(1).startswith("file://"), err
    for rank in (0, 1):
        assert open(tmp_path / f"rank{rank}").read() == f"1 2 {rank}"
    assert not os.path.exists(os.path.dirname(url.group(1)[len("file://"):]))


def test_a_worker_leaves_no_process_group_behind(tmp_path):
    """After its function returns, a CPU worker has destroyed the process group and dropped
    Detectron2's per-machine group, so no GLOO object is left for interpreter shutdown to free
    (freeing one there can abort the process)."""
    import weakref

    import torch.distributed as dist
    from detectron2.utils import comm

    from retina_focal.engine.launch import DEFAULT_TIMEOUT, _cpu_worker

    groups = []

    def rank_and_local_group():
        comm.gather([comm.get_rank()])  # what evaluation does last: caches its group
        groups.append(weakref.ref(comm._get_global_gloo_group()))
        return comm.get_rank(), comm._LOCAL_PROCESS_GROUP is not None

    url = "file://" + str(tmp_path / "store")
    assert _cpu_worker(0, rank_and_local_group, 1, 1, 0, url, (), DEFAULT_TIMEOUT) == (0, True)
    assert not dist.is_initialized()
    assert comm._LOCAL_PROCESS_GROUP is None
    # issue 28 (13): gather's cached group (GLOO: the WORLD group) was kept alive by
    # Detectron2's lru_cache until interpreter shutdown; it is freed now
    assert comm._get_global_gloo_group.cache_info().currsize == 0
    assert groups[0]() is None
    create = getattr(comm, "create_local_process_group", None)  # official Detectron2
    if create is not None:
        assert create.cache_info().currsize == 0


def _fails_as_a_user_would_see(kind):
    """Run in every launched process: rank 1 refuses its input the way commands do."""
    from detectron2.utils import comm

    from retina_focal.utils.errors import DataError

    if comm.get_rank() == 1:
        if kind == "user-error":
            raise DataError("--dataset d: annotation file 'x.json' does not exist")
        raise SystemExit("error: --input 'nope' matches no image file")
    comm.synchronize()  # rank 0 waits for a peer that is gone; the launcher ends it


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU launcher only")
@pytest.mark.parametrize("kind,message", [
    ("user-error", "--dataset d: annotation file 'x.json' does not exist"),
    ("error-exit", "--input 'nope' matches no image file"),
])
def test_a_workers_user_error_ends_the_launch_with_its_message(kind, message, monkeypatch):
    """Issue 28 (stranger test): under --num-gpus 2 a refused input was a multi-process
    traceback; now the launcher raises the worker's message as a UserError (one error line)."""
    from retina_focal.engine.launch import WorkerUserError
    from retina_focal.utils.errors import TRACEBACK_ENV, UserError

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(WorkerUserError) as err:
        launch(_fails_as_a_user_would_see, 2, dist_url="auto", args=(kind,))
    assert isinstance(err.value, UserError) and str(err.value) == message


def _rank_buffers_then_sync(out_dir):
    """Run in every launched process: BatchNorm statistics that differ per process, then
    sync_buffers_from_main."""
    from detectron2.utils import comm

    from retina_focal.engine.trainer import sync_buffers_from_main

    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(float(comm.get_rank() + 1))
    bn.num_batches_tracked.fill_(10 * (comm.get_rank() + 1))
    sync_buffers_from_main(bn)
    torch.save(dict(bn.state_dict()), os.path.join(out_dir, f"rank{comm.get_rank()}.pth"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU launcher only")
def test_sync_buffers_from_main_gives_every_process_the_main_processs_statistics(tmp_path):
    """Issue 28 (stranger test): each process keeps its own BatchNorm statistics while
    training, and only the main process's are saved; evaluation on two processes used both
    and scored another model than the checkpoint (3.92 AP against 3.11)."""
    launch(_rank_buffers_then_sync, 2, dist_url="auto", args=(str(tmp_path),))
    states = [torch.load(tmp_path / f"rank{r}.pth") for r in (0, 1)]
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert float(states[1]["running_mean"][0]) == 1.0
    assert int(states[1]["num_batches_tracked"]) == 10


_SLEEPING_LAUNCH = """
import os, sys, time
sys.path.insert(0, {tests!r})
from retina_focal.engine.launch import launch
import test_engine_launch
launch(test_engine_launch._write_pid_and_sleep, 2, dist_url="auto", args=({out!r},))
"""


def _write_pid_and_sleep(out_dir):
    """Run in every launched process: leave its pid, then work for a long time, deaf to the
    SIGINT that torch's spawn asks Linux to send when the parent dies (a training worker was
    seen not to act on it)."""
    import signal
    import time

    from detectron2.utils import comm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(os.path.join(out_dir, f"pid{comm.get_rank()}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


@pytest.mark.skipif(torch.cuda.is_available() or not os.sys.platform.startswith("linux"),
                    reason="CPU launcher on Linux (PR_SET_PDEATHSIG)")
def test_workers_die_with_the_killed_launching_process(tmp_path):
    """Issue 28 (stranger test): a SIGKILL of a --num-gpus 2 command left its two workers
    training and writing checkpoints."""
    import signal
    import subprocess
    import sys
    import time

    tests = os.path.dirname(os.path.abspath(__file__))
    code = _SLEEPING_LAUNCH.format(tests=tests, out=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    pids, deadline = [], time.time() + 120
    while time.time() < deadline and len(pids) < 2:
        pids = [int(open(f).read()) for f in (tmp_path / "pid0", tmp_path / "pid1")
                if f.exists() and f.read_text()]
        time.sleep(0.1)
    assert len(pids) == 2, "the workers did not start"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie (dead, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"

    deadline = time.time() + 20
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]
