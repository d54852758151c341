"""The resumable training stream: order and augmentation are functions of (seed, position)."""
import itertools
import logging
import random

import numpy as np
import pytest
import torch

from retina_focal.data.samplers import ResumableTrainingSampler, SeededMapDataset


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_stream_is_a_sequence_of_permutations_and_resumes_at_any_iteration():
    s = ResumableTrainingSampler(5, total_batch_size=2, seed=11)
    stream = _take(s, 30)
    assert [p for p, _ in stream] == list(range(30))
    for epoch in range(6):  # every pass over the data is a permutation of it
        assert sorted(i for _, i in stream[5 * epoch:5 * epoch + 5]) == list(range(5))
    orders = {tuple(i for _, i in stream[5 * e:5 * e + 5]) for e in range(6)}
    assert len(orders) > 1  # reshuffled each pass
    for start_iter in (1, 3, 7):  # resuming = the same stream from position start_iter * 2
        r = ResumableTrainingSampler(5, total_batch_size=2, seed=11)
        r.set_start_iter(start_iter)
        assert _take(r, 30 - 2 * start_iter) == stream[2 * start_iter:]
    other = ResumableTrainingSampler(5, total_batch_size=2, seed=12)
    assert [i for _, i in _take(other, 30)] != [i for _, i in stream]


def test_seed_is_checkpointed():
    a = ResumableTrainingSampler(7, total_batch_size=1, seed=1)
    b = ResumableTrainingSampler(7, total_batch_size=1, seed=2)
    b.load_state_dict(a.state_dict())
    assert _take(a, 20) == _take(b, 20)


def test_mapper_randomness_depends_on_position_only_and_global_rngs_are_untouched():
    def mapper(d):
        return (d, np.random.rand(), random.random(), torch.rand(1).item())

    s = ResumableTrainingSampler(3, total_batch_size=1, seed=5)
    ds = SeededMapDataset(["a", "b", "c"], mapper, s)
    np.random.seed(0)
    before = np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state()
    first = ds[(4, 1)]
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert random.getstate() == before[1] and torch.equal(torch.get_rng_state(), before[2])
    assert ds[(4, 1)] == first and first[0] == "b"
    assert ds[(5, 1)][1:] != first[1:]  # another position, other random numbers


def test_seeding_an_element_leaves_the_cuda_generators_alone(monkeypatch):
    """Only torch's CPU generator is seeded (and restored) per element: torch.manual_seed would
    also seed every CUDA generator, leave it changed, and cost ~1 ms per image."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    s = ResumableTrainingSampler(3, total_batch_size=1, seed=5)
    ds = SeededMapDataset(["a", "b", "c"], lambda d: (d, torch.rand(1).item()), s)
    assert ds[(4, 1)] == ds[(4, 1)]  # still seeded: the same element, the same numbers
    assert calls == []


def test_rejected_elements_are_replaced_deterministically():
    s = ResumableTrainingSampler(4, total_batch_size=1, seed=0)
    ds = SeededMapDataset([0, 1, 2, 3], lambda x: None if x == 2 else x, s)
    got = [ds[(p, 2)] for p in range(5)]
    assert all(g in (0, 1, 3) for g in got)
    assert got == [ds[(p, 2)] for p in range(5)]


@pytest.mark.parametrize("grouping", [True, False], ids=["aspect_grouping", "no_grouping"])
def test_loader_batches_do_not_depend_on_the_number_of_workers(tiny_cfg, grouping):
    """On 0.6 and on main alike (their ``build_batch_data_loader`` shard workers differently,
    so the loader does not use it)."""
    from retina_focal.data.build import build_resumable_train_loader

    def batches(num_workers, start_iter):
        cfg = tiny_cfg.clone()
        cfg.merge_from_list(["SEED", 4, "SOLVER.IMS_PER_BATCH", 2,
                             "INPUT.MIN_SIZE_TRAIN", (96, 112, 128),
                             "DATALOADER.ASPECT_RATIO_GROUPING", grouping,
                             "DATALOADER.NUM_WORKERS", num_workers])
        loader = build_resumable_train_loader(cfg)
        loader.set_start_iter(start_iter)
        it = iter(loader)
        return [[(d["image_id"], d["image"]) for d in next(it)] for _ in range(3)]

    ref = batches(0, 0)
    got0, got1 = batches(2, 0), batches(3, 1)
    for a, b in zip(ref, got0):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))  # same resize and flip
    for a, b in zip(ref[1:], got1):  # resumed at iteration 1, with other workers
        assert [i for i, _ in a] == [i for i, _ in b]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_another_training_sampler_warns_that_its_order_restarts_on_resume(tiny_cfg, caplog):
    from retina_focal.data.build import build_resumable_train_loader

    name = "retina_focal.data.build"
    logger = logging.getLogger(name)
    logger.addHandler(caplog.handler)  # whatever a setup_logger did to propagation
    try:
        with caplog.at_level(logging.WARNING, logger=name):
            build_resumable_train_loader(tiny_cfg)  # the default: resumable, no warning
            assert not [r for r in caplog.records if r.name == name], caplog.text
            cfg = tiny_cfg.clone()
            cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
            build_resumable_train_loader(cfg)
    finally:
        logger.removeHandler(caplog.handler)
    messages = {r.getMessage() for r in caplog.records if r.name == name}
    assert messages == {"DATALOADER.SAMPLER_TRAIN=RepeatFactorTrainingSampler: using "
                        "Detectron2's loader; its data order restarts when training is resumed"}
