"""A training data stream that can be resumed exactly.

Detectron2's ``TrainingSampler`` restarts its shuffled order from the beginning when a job is
resumed, and each ``DataLoader`` worker draws augmentation randomness from a process-global
RNG, so a resumed run sees other images, other flips and other resize scales than an
uninterrupted one. Here both are pure functions of ``(seed, position)``:

* the global stream is ``perm_0 + perm_1 + ...`` where ``perm_e`` is a permutation of the
  dataset drawn from ``(seed, e)``; element ``p`` of the stream is therefore known without
  iterating through ``0..p-1``;
* the mapper (augmentation) of the element at position ``p`` runs with numpy, ``random`` and
  torch RNGs seeded from ``(seed, p)`` and restored afterwards;
* rank ``r`` of ``W`` processes takes positions ``r, r + W, r + 2W, ...``, so iteration ``i``
  (total batch ``B``) uses exactly positions ``[i*B, (i+1)*B)`` whatever ``W`` is: two
  processes of 2 images see the same images, identically augmented, as one process of 4;
* the ``DataLoader`` workers of a process map its positions in turn and their results are
  read back in that order (:mod:`retina_focal.data.build`), so ``NUM_WORKERS`` changes
  nothing either.

Resuming at iteration ``i`` starts the stream at position ``i * B``.
"""
import logging
import random
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableTrainingSampler", "SeededMapDataset"]

logger = logging.getLogger(__name__)


def _seed_words(seed: int, *keys: int, n: int = 4) -> List[int]:
    """``n`` independent 32-bit words derived from ``(seed, *keys)``."""
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *keys]).generate_state(n).tolist()


class ResumableTrainingSampler(Sampler):
    """An infinite stream of ``(position, dataset_index)`` pairs for this process.

    Args:
        size: number of dataset elements.
        total_batch_size: images per iteration summed over all processes (``IMS_PER_BATCH``).
        seed: shared by all processes; ``None`` draws one shared random seed. It is saved in
            checkpoints (:meth:`state_dict`) so a resumed job continues the same stream.
        shuffle: shuffle each pass over the dataset.

    Example (one process, 5 images, 2 per iteration)::

        s = ResumableTrainingSampler(5, total_batch_size=2, seed=0)
        s.set_start_iter(3)      # the next iteration to run is 3
        next(iter(s))            # -> (6, perm_1[1]): position 6 = 3 * 2
    """

    def __init__(self, size: int, *, total_batch_size: int, seed: Optional[int] = None,
                 shuffle: bool = True):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"ResumableTrainingSampler needs a positive dataset size, got {size}")
        if total_batch_size <= 0:
            raise ValueError(f"total_batch_size must be positive, got {total_batch_size}")
        self._size = size
        self._shuffle = shuffle
        self._total_batch_size = int(total_batch_size)
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        """Make the stream begin at the first image of iteration ``start_iter``. Call it before
        the data loader is first iterated."""
        self._start_iter = int(start_iter)

    def permutation(self, epoch: int) -> torch.Tensor:
        """(size,) int64: the dataset order of pass ``epoch`` over the data."""
        if not self._shuffle:
            return torch.arange(self._size)
        g = torch.Generator()
        g.manual_seed(_seed_words(self.seed, 1, epoch, n=1)[0])
        return torch.randperm(self._size, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        position = self._start_iter * self._total_batch_size + self._rank
        # position >= 0, so the first pass (epoch >= 0) always replaces this empty permutation
        epoch, perm = -1, []
        while True:
            e = position // self._size
            if e != epoch:
                epoch, perm = e, self.permutation(e).tolist()
            yield position, perm[position % self._size]
            position += self._world_size

    # checkpointable: the seed is what makes the stream reproducible after a resume
    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        if int(state["seed"]) != self.seed:
            logger.info(f"Training data stream: using the checkpoint's seed {state['seed']} "
                        f"(was {self.seed})")
        self.seed = int(state["seed"])


class SeededMapDataset(Dataset):
    """``dataset[index]`` mapped by ``mapper``, addressed by ``(position, index)`` pairs from
    :class:`ResumableTrainingSampler`; the mapper runs with RNGs seeded from
    ``(seed, position)``, so augmentation does not depend on which process or worker maps it.

    When the mapper returns ``None`` (it rejected the element, e.g. an unreadable image that is
    configured to be skipped), another index is drawn from ``(seed, position, attempt)``.
    """

    def __init__(self, dataset, mapper: Callable, sampler: ResumableTrainingSampler,
                 max_attempts: int = 100):
        self._dataset = dataset
        self._mapper = mapper
        self._sampler = sampler  # its seed may change when a checkpoint is loaded
        self._max_attempts = max_attempts

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key: Tuple[int, int]):
        position, index = key
        seed = self._sampler.seed
        for attempt in range(self._max_attempts):
            np_seed, py_seed, torch_seed, pick = _seed_words(seed, 2, position, attempt)
            if attempt > 0:
                index = pick % len(self._dataset)
            out = _call_seeded(self._mapper, self._dataset[index], np_seed, py_seed, torch_seed)
            if out is not None:
                return out
        raise RuntimeError(
            f"The dataset mapper rejected {self._max_attempts} elements in a row "
            f"(last index {index}): check the dataset"
        )


def _call_seeded(fn, arg, np_seed: int, py_seed: int, torch_seed: int):
    """``fn(arg)`` with numpy / random / torch seeded, the callers' RNG states left as they
    were."""
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), \
        torch.get_rng_state()
    np.random.seed(np_seed)
    random.seed(py_seed)
    # the CPU generator only: torch.manual_seed would also queue a seed for every CUDA device
    # (formatting a stack trace each time, ~1 ms per image) and leave it changed afterwards
    torch.default_generator.manual_seed(torch_seed)
    try:
        return fn(arg)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
