"""Identity batch samplers for re-ID (docs/methods.md §5). Each yields *batches* (lists of indices).

All are seeded and epoch-aware (``set_epoch``): the batches of an epoch are a function of
``(seed, epoch)`` only. For distributed training every rank builds the same *global* batches of
P·world identities and keeps its own slice of P whole identities (P ids × K images), so within a
step the ranks hold disjoint identities, together they cover the global batch, and every rank has
the same number of batches.

* ``PKSampler`` — torchreid's ``RandomIdentitySampler``: each identity's images shuffled and cut
  into chunks of K (ids with fewer than K images resampled with replacement, the remainder of a
  longer one dropped); batches take P random ids with chunks left, one chunk each. An identity
  appears at most ⌊max(n_j, K)/K⌋ times per epoch; the epoch ends, as torchreid's does, when fewer
  than P ids have chunks left (so it is at most torchreid's nominal ``Σ_j ⌊max(n_j, K)/K⌋ // P``
  batches; ``len()`` gives the exact count of the current epoch).
* ``BalancedIdentitySampler`` — fast-reid's: every identity once per pass, its K−1 companions
  preferring cameras other than the anchor's.
* ``PowerLawSampler`` — Kang et al. 2020: identities drawn with ``p_j ∝ n_j^q`` (q = 1 instance-
  balanced, ½ square-root, 0 class-balanced), K images each. Each epoch gives id j its expected
  share ``B·P·p_j`` of the slots by systematic sampling (exact up to one slot) and deals the slots
  so no id repeats within a batch (reachable while max p_j ≤ 1/P; a warning says when not).
  Epoch: B = N / (P·K) batches.
* ``RepeatFactorSampler`` — LVIS (Gupta et al. 2019): ``r_j = max(1, √(t / f_j))``, f_j the
  fraction of images of identity j; each image repeated ⌊r_j⌋ times plus one with probability
  r_j − ⌊r_j⌋ (stochastic rounding per epoch), then PK-chunked as in ``PKSampler``.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from ..arguments import Float
from ..errors import ReidError
from ..settings import Setting

log = logging.getLogger(__name__)


class _IdentitySampler:
    #: the sampler's own settings (``reid.settings.Setting``), declared here once: each is a
    #: constructor keyword and the key of the config's ``sampler:`` section of the same name
    OPTIONS: dict = {}
    NEEDS_CAMIDS = False

    def __init__(
        self,
        pids,
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        pids = np.asarray(pids)
        if pids.size == 0:
            raise ReidError("sampler: the training set is empty")
        if num_instances <= 0 or batch_size % num_instances:
            raise ReidError(
                f"sampler.batch_size={batch_size} is not a multiple of sampler.num_instances={num_instances} (P×K must equal it)"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"sampler: rank {rank} outside world size {world_size}")
        self.index_by_pid: dict[int, np.ndarray] = {}
        for pid in np.unique(pids):
            self.index_by_pid[int(pid)] = np.nonzero(pids == pid)[0]
        self.pids = sorted(self.index_by_pid)
        self.counts = np.array([len(self.index_by_pid[p]) for p in self.pids])
        self.K, self.P = (
            num_instances,
            (batch_size // num_instances) * world_size,
        )  # P of the global batch
        self.per_rank = batch_size
        if self.P > len(self.pids):
            raise ReidError(
                f"sampler.batch_size: P = {self.P} identities per (global) batch but the training set has only {len(self.pids)}"
            )
        if self.K > self.counts.max():
            raise ReidError(
                f"sampler.num_instances={self.K} is larger than every identity (the largest has {self.counts.max()} images)"
            )
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def global_batches(self) -> list[list[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_global_batches(self) -> int:
        return len(self._epoch_batches())

    def _epoch_batches(self) -> list[list[int]]:
        if getattr(self, "_cache", (None,))[0] != (self.seed, self.epoch):
            self._cache = ((self.seed, self.epoch), self.global_batches())
        return self._cache[1]

    def __len__(self) -> int:
        return self.num_global_batches()

    def __iter__(self):
        start = self.rank * self.per_rank
        for batch in self._epoch_batches():
            yield batch[start : start + self.per_rank]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = state["seed"], state["epoch"]

    # shared PK chunking -------------------------------------------------------------
    def _chunks(self, rng, index_by_pid) -> dict[int, list]:
        chunks = defaultdict(list)
        for pid in self.pids:
            idxs = np.asarray(index_by_pid[pid])
            if len(idxs) == 0:
                continue
            if len(idxs) < self.K:
                idxs = rng.choice(idxs, size=self.K, replace=True)
            idxs = rng.permutation(idxs)
            for start in range(0, len(idxs) - self.K + 1, self.K):
                chunks[pid].append(idxs[start : start + self.K].tolist())
        return chunks

    def _pk_batches(self, rng, index_by_pid) -> list[list[int]]:
        chunks = self._chunks(rng, index_by_pid)
        available = [p for p in self.pids if chunks[p]]
        batches: list[list[int]] = []
        while len(available) >= self.P:
            chosen = rng.choice(len(available), size=self.P, replace=False)
            batch = []
            for pid in [available[i] for i in chosen]:
                batch += chunks[pid].pop(0)
            available = [p for p in available if chunks[p]]
            batches.append(batch)
        return batches


class PKSampler(_IdentitySampler):
    def nominal_length(self) -> int:
        """torchreid's ``len()`` in images: ``K · Σ_j ⌊max(n_j, K)/K⌋``."""
        return int(sum(max(n, self.K) // self.K for n in self.counts)) * self.K

    def global_batches(self):
        return self._pk_batches(self._rng(), self.index_by_pid)


class BalancedIdentitySampler(_IdentitySampler):
    NEEDS_CAMIDS = True

    def __init__(self, pids, camids, batch_size, num_instances, **kwargs):
        super().__init__(pids, batch_size, num_instances, **kwargs)
        self.camids = np.asarray(camids)

    def _identity_batch(self, rng, pid) -> list[int]:
        idxs = rng.permutation(self.index_by_pid[pid])
        anchor, rest = idxs[0], idxs[1:]
        other_cam = [i for i in rest if self.camids[i] != self.camids[anchor]]
        same_cam = [i for i in rest if self.camids[i] == self.camids[anchor]]
        chosen = [anchor] + (other_cam + same_cam)[: self.K - 1]
        while len(chosen) < self.K:
            chosen.append(int(rng.choice(idxs)))
        return [int(i) for i in chosen]

    def global_batches(self):
        rng = self._rng()
        order = [self.pids[i] for i in rng.permutation(len(self.pids))]
        shortfall = -len(order) % self.P
        if shortfall:  # fill the last batch with ids not already in it
            last = set(order[len(order) - (len(order) % self.P) :])
            order += [
                p for p in (self.pids[i] for i in rng.permutation(len(self.pids))) if p not in last
            ][:shortfall]
        return [
            sum((self._identity_batch(rng, p) for p in order[i : i + self.P]), [])
            for i in range(0, len(order), self.P)
        ]


class PowerLawSampler(_IdentitySampler):
    OPTIONS = {"power": Setting(0.5, "power: identity weights ∝ count^power", Float(0, 10))}

    def __init__(self, pids, batch_size, num_instances,
                 power: float = OPTIONS["power"].default, **kwargs):  # fmt: skip
        super().__init__(pids, batch_size, num_instances, **kwargs)
        weights = self.counts.astype(np.float64) ** power
        self.probabilities = weights / weights.sum()
        self.power = power
        if self.probabilities.max() > 1.0 / self.P:
            log.warning(
                "power-law sampler: the largest identity needs p = %.3f but one batch slot of %d gives at "
                "most %.3f; its frequency will fall short of n^q (lower q or P)",
                self.probabilities.max(),
                self.P,
                1.0 / self.P,
            )

    def global_batches(self):
        rng = self._rng()
        num_batches = max(1, int(self.counts.sum()) // (self.P * self.K))
        # systematic sampling: id j gets ⌊C_j + u⌋ − ⌊C_{j−1} + u⌋ of the B·P slots (C = cumsum of
        # the expected slots), i.e. its expected share up to one; capped at one slot per batch
        expected = np.minimum(num_batches * self.P * self.probabilities, num_batches)
        order = rng.permutation(len(self.pids))
        cumulative = np.floor(np.cumsum(expected[order]) + rng.random())
        slots = np.diff(np.concatenate([[0.0], cumulative])).astype(np.int64)
        layout = np.repeat(order, slots)
        num_batches = len(layout) // self.P
        layout = layout[: num_batches * self.P]
        batches = []
        for b in rng.permutation(
            num_batches
        ):  # slot t → batch t mod B: an id's slots never share a batch
            batch = []
            for j in rng.permutation(layout[b::num_batches]):
                idxs = self.index_by_pid[self.pids[j]]
                batch += rng.choice(idxs, size=self.K, replace=len(idxs) < self.K).tolist()
            batches.append(batch)
        return batches


class RepeatFactorSampler(_IdentitySampler):
    OPTIONS = {
        "repeat_threshold": Setting(0.01, "repeat: LVIS repeat-factor threshold t", Float(0, 1))
    }

    def __init__(self, pids, batch_size, num_instances,
                 repeat_threshold: float = OPTIONS["repeat_threshold"].default, **kwargs):  # fmt: skip
        super().__init__(pids, batch_size, num_instances, **kwargs)
        fractions = self.counts / self.counts.sum()
        self.repeat_factors = np.maximum(1.0, np.sqrt(repeat_threshold / fractions))
        self.threshold = repeat_threshold

    def repeated_pools(self, rng) -> dict[int, np.ndarray]:
        """Each image repeated ⌊r_j⌋ times, plus once with probability r_j − ⌊r_j⌋."""
        repeated = {}
        for pid, factor in zip(self.pids, self.repeat_factors):
            idxs = self.index_by_pid[pid]
            times = int(factor) + (rng.random(len(idxs)) < factor - int(factor))
            repeated[pid] = np.repeat(idxs, times)
        return repeated

    def global_batches(self):
        rng = self._rng()
        return self._pk_batches(rng, self.repeated_pools(rng))


SAMPLERS = {
    "pk": PKSampler,
    "balanced": BalancedIdentitySampler,
    "power": PowerLawSampler,
    "repeat": RepeatFactorSampler,
}
