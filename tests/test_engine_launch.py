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
