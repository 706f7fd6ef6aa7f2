"""Batch samplers that build P x K batches for triplet-loss training.

Batch-hard and batch-all triplet mining need every batch to hold several labels and several
items per label. :class:`PKSampler` implements the P x K batch construction of Hermans, Beyer and
Leibe, "In Defense of the Triplet Loss for Person Re-Identification" (2017,
arXiv:1703.07737): each batch holds ``p`` distinct labels with ``k`` items each.

Used as a ``batch_sampler``::

    sampler = PKSampler(labels, p=8, k=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    for epoch in range(num_epochs):
        for x, y in loader:  # x: (p * k, ...), y: (p * k,)
            ...
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Sampler

__all__ = ["BIG_CLASS", "TARGET_BATCH", "PKSampler", "SmallClassPolicy", "default_pk"]

SmallClassPolicy = Literal["fill", "replace", "drop"]

# small_classes policy -> whether classes with fewer than k items are kept (and sampled with
# replacement) or left out.
_KEEP_SMALL_CLASSES: dict[str, bool] = {"fill": True, "replace": True, "drop": False}

#: A class this large or larger is "big": when the median class is big, the default batch is
#: the tuned P=10 x K=16 of docs/results.md (Fashion-MNIST, MNIST, digits).
BIG_CLASS = 16
#: The default batch size when classes are small (median below :data:`BIG_CLASS`).
TARGET_BATCH = 128

# Multiplier that folds (seed, epoch) into one generator seed; see PKSampler._epoch_seed.
_SEED_STRIDE = 1_000_003
# Weight added to every class's remaining chunks so that torch.multinomial always has at least
# p candidates when fewer than p classes have chunks left in this epoch, and picks among the
# exhausted classes uniformly (with zero weights it would fill in with the same classes).
_EPS_WEIGHT = 1e-3


def _labels_to_tensor(labels: Sequence[int] | torch.Tensor | npt.NDArray[Any]) -> torch.Tensor:
    """Validate ``labels`` and return them as a 1-D CPU int64 tensor of shape (N,).

    Raises:
        ValueError: if the labels are not a 1-D sequence of integers (floats, bools, strings,
            complex numbers and 2-D arrays are rejected, even when they hold whole numbers).
    """
    if isinstance(labels, torch.Tensor):
        dtype = labels.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(
                f"labels must be integers, got a tensor of dtype {dtype}; "
                "convert them with labels.long()"
            )
        if labels.dim() != 1:
            raise ValueError(
                f"labels must be 1-D with one label per dataset item, got shape "
                f"{tuple(labels.shape)}; pass a flat tensor of shape (N,)"
            )
        return labels.detach().to(device="cpu", dtype=torch.int64)

    try:
        array = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(
            f"labels must be a 1-D sequence of integers, could not convert them: {err}"
        ) from err
    if array.ndim != 1:
        raise ValueError(
            f"labels must be 1-D with one label per dataset item, got shape {array.shape}; "
            "pass a flat sequence of shape (N,)"
        )
    if array.size == 0:
        # np.asarray([]) is float64; an empty label list is reported as "0 classes" later.
        return torch.empty(0, dtype=torch.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers, got dtype {array.dtype}; "
            "convert them with np.asarray(labels, dtype=np.int64)"
        )
    return torch.from_numpy(array.astype(np.int64, copy=True))


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding batches of ``p * k`` indices: ``p`` labels x ``k`` items each,
    or more labels with fewer items where classes are small.

    This is the P x K batch construction of Hermans, Beyer and Leibe, "In Defense of the Triplet
    Loss for Person Re-Identification" (2017). When every class holds at least ``k`` items,
    every batch holds exactly ``p`` different labels and ``k`` distinct dataset indices per
    label, so every anchor has ``k - 1`` positives and ``(p - 1) * k`` negatives in its batch.
    Use it as ``DataLoader(dataset, batch_sampler=PKSampler(labels, p, k))``.

    Each yielded batch is a list of ``p * k // num_replicas`` int dataset indices: the global
    batch always holds ``p * k`` indices. It is ordered class by class (the indices of the
    first chosen class, then those of the next, and so on); the order of the classes inside a
    batch is random.

    Small classes (``small_classes``, for classes of fewer than ``k`` items):

    - ``"fill"`` (the default): no index repeats inside a batch. A class of ``2 <= n_c < k``
      items contributes all its items (shuffled) and the batch is filled up to ``p * k`` with
      more classes, so a batch can hold more than ``p`` labels and the batch size stays
      ``p * k`` (what data-parallel sharding needs). Classes of fewer than 2 items (no
      positive pair) are left out, with one ``UserWarning`` that counts them (with ``k == 1``
      nothing is left out).
    - ``"replace"`` (the behaviour of earlier versions): a small class contributes all its
      items plus ``k - n_c`` draws with replacement (duplicates are zero-distance positives);
      a class of one item yields ``k`` copies of its index. Batches hold exactly ``p`` labels.
    - ``"drop"``: classes of fewer than ``k`` items are left out. Batches hold exactly ``p``
      labels.

    Epoch plan. All randomness of an epoch comes from one ``torch.Generator`` seeded from
    ``(seed, epoch)`` (the global RNG and Python's ``random`` are never touched). Each usable
    class ``c`` with ``n_c`` items gets ``chunks_c = max(1, n_c // k)`` chunks of
    ``min(k, n_c)`` items per epoch, and ``len(sampler) == sum(chunks_c * min(k, n_c)) //
    (p * k)``: one pass over the usable items (``sum(chunks_c) // p`` when no class is small,
    as in earlier versions; ``"replace"`` counts a small class as ``k`` items). For each batch
    the classes are drawn without replacement with probability proportional to their
    remaining chunks (plus a small epsilon, so there are always enough candidates and classes
    with no chunks left are drawn uniformly when needed), and taken in that order until the
    batch holds ``p * k`` items; each class contributes the next items of a random
    permutation of its items, and a new permutation is drawn when too few remain. So within
    one epoch nearly every item is seen once (at most ``n_c % k`` items of each class are
    skipped, plus a few chunks at the end of the epoch). When no class is small, the batches
    are those of earlier versions, bit for bit.

    Epochs. ``__iter__`` uses the current :attr:`epoch` and, once the iteration is exhausted,
    advances :attr:`epoch` by one, so a plain ``for epoch in ...: for batch in loader`` loop
    gets a new (but reproducible) order every epoch. :meth:`set_epoch` sets it explicitly, for
    resuming and for distributed training. Iterating twice after the same ``set_epoch(e)``
    yields identical batches, and two samplers with the same arguments and epoch yield
    identical batches.

    Sharding. With ``num_replicas > 1`` every rank builds the same global batch and yields its
    contiguous slice ``batch[rank * m:(rank + 1) * m]`` with ``m = p * k // num_replicas``: the
    slices of one step are disjoint and concatenate (in rank order) to the global batch, and
    all ranks yield the same number of batches. Gather embeddings and labels across ranks
    before mining triplets.

    Args:
        labels: (N,) integer label of every dataset item, as a sequence, NumPy array or tensor
            (copied to a CPU int64 tensor). Labels need not be contiguous or non-negative.
        p: number of labels per global batch when classes hold ``k`` items or more, >= 1.
        k: number of items per label, at most (``"fill"``) or exactly, >= 1.
        seed: base seed; the epoch's generator is seeded with
            ``(seed * 1_000_003 + epoch) mod 2**64``.
        small_classes: ``"fill"``, ``"replace"`` or ``"drop"``, see above.
        num_replicas: number of data-parallel processes sharing each global batch, >= 1; must
            divide ``p * k``.
        rank: index of this process in ``[0, num_replicas)``.

    Raises:
        ValueError: at construction if ``labels`` are not 1-D integers, ``p < 1`` or ``k < 1``,
            ``small_classes`` is not one of the policies, ``num_replicas < 1``, ``rank`` is
            outside ``[0, num_replicas)``, ``num_replicas`` does not divide ``p * k``, or the
            usable classes cannot fill a batch (``"replace"`` and ``"drop"``: fewer than ``p``
            usable classes; ``"fill"``: ``sum(min(k, n_c)) < p * k`` over the usable classes).

    Corner cases:
        - ``"fill"``: a batch never leaves a class with a single item while another class
          could give two; only when the batch cannot otherwise be filled exactly (e.g. every
          class holds 2 items and ``p * k`` is odd) does one class give one item, which is
          then an anchor without a positive (the miners skip it; it still serves as a
          negative). To keep pairs, a class may give one item fewer than ``min(k, n_c)``.
        - ``k == 1`` gives batches without positive pairs (useless for triplet loss but
          allowed); ``p == 1`` gives batches without negatives unless classes are small.
        - ``len(sampler) >= 1`` always. Late in an epoch, a class with no chunks left can be
          drawn to fill a batch; it then restarts its permutation.
        - An iteration abandoned before its end does not advance :attr:`epoch`; nor does one
          during which :meth:`set_epoch` was called (the value set is kept).
        - With ``num_replicas > 1``, a rank's slice holds whole classes only if every class
          in the batch gives ``k`` items and ``num_replicas`` divides ``p``; otherwise a class
          can straddle two ranks.
        - Seeds collide for ``(seed, epoch)`` and ``(seed + 1, epoch - 1_000_003)``, so runs
          with neighbouring seeds only overlap after a million epochs.

    Example:
        >>> sampler = PKSampler([0, 0, 1, 1, 2, 2], p=2, k=2, seed=0)
        >>> len(sampler)
        1
        >>> [batch] = list(sampler)
        >>> len(batch), sampler.epoch
        (4, 1)
        >>> small = PKSampler([0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2], p=2, k=3, seed=0)
        >>> [len(b) for b in small], len(small)
        ([6], 1)
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor | npt.NDArray[Any],
        p: int,
        k: int,
        *,
        seed: int = 0,
        small_classes: SmallClassPolicy = "fill",
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        label_tensor = _labels_to_tensor(labels)  # (N,)
        self._p = _check_int("p", p, 1)
        self._k = _check_int("k", k, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got seed={seed!r}")
        if small_classes not in _KEEP_SMALL_CLASSES:
            raise ValueError(
                f"small_classes must be one of {sorted(_KEEP_SMALL_CLASSES)}, "
                f"got small_classes={small_classes!r}"
            )
        self._fill = small_classes == "fill"
        keep_small = _KEEP_SMALL_CLASSES[small_classes]
        self._num_replicas = _check_int("num_replicas", num_replicas, 1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be an integer in [0, num_replicas) = [0, {num_replicas}), "
                f"got rank={rank!r}; pass this process's rank, e.g. torch.distributed.get_rank()"
            )
        self._rank = rank
        if (p * k) % num_replicas != 0:
            raise ValueError(
                f"num_replicas={num_replicas} must divide the global batch size "
                f"p*k={p}*{k}={p * k}; change p or k so that p*k is a multiple of num_replicas"
            )
        self.seed = seed

        # Group item indices by label once: O(N log N) here, nothing per item afterwards.
        values, inverse, counts = torch.unique(
            label_tensor, sorted=True, return_inverse=True, return_counts=True
        )  # (C_all,), (N,), (C_all,)
        by_class = torch.argsort(inverse, stable=True)  # (N,) item indices grouped by class
        groups = torch.split(by_class, counts.tolist())  # C_all tensors of shape (n_c,)
        num_total = int(values.numel())
        is_small = counts < k  # (C_all,)
        num_small = int(is_small.sum())
        if self._fill:
            usable = counts >= min(2, k)  # (C_all,) singletons have no positive pair
        else:
            usable = torch.ones_like(is_small) if keep_small else ~is_small  # (C_all,)
        num_usable = int(usable.sum())
        self._num_left_out = num_total - num_usable

        if self._fill:
            available = int(counts[usable].clamp(max=k).sum())  # items one batch can hold
            if available < p * k:
                raise ValueError(
                    f"need p={p} x k={k} = {p * k} items for a batch, without repeats, but the "
                    f"{num_usable} classes with at least {min(2, k)} items ({num_total} in "
                    f"total) give at most {available} (min(k, class size) each); lower p or k"
                )
        elif num_usable < p:
            requirement = f"at least k={k} items" if not keep_small else "at least 1 item"
            fix = "lower p or k, or use small_classes='fill'" if not keep_small else "lower p"
            raise ValueError(
                f"need at least p={p} classes with {requirement} but the labels have only "
                f"{num_usable} usable classes ({num_total} in total); {fix}"
            )
        if self._fill:
            if self.num_left_out > 0:
                warnings.warn(
                    f"left out {self.num_left_out} of {num_total} classes with fewer than 2 "
                    "items (no positive pair; small_classes='fill')",
                    UserWarning,
                    stacklevel=2,
                )
        elif num_small > 0:
            if keep_small:
                warnings.warn(
                    f"{num_small} of {num_total} classes have fewer than k={k} items; they are "
                    "sampled with replacement (small_classes='replace'), pass "
                    "small_classes='fill' to take each item once",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn(
                    f"dropped {num_small} of {num_total} classes with fewer than k={k} items "
                    "(small_classes='drop')",
                    UserWarning,
                    stacklevel=2,
                )

        keep = usable.tolist()
        self._classes: torch.Tensor = values[usable]  # (C,) sorted usable labels
        self._groups: list[torch.Tensor] = [g for g, u in zip(groups, keep, strict=True) if u]
        sizes = counts[usable]  # (C,)
        # Items a class gives when drawn: min(k, n_c) with "fill", else k.
        gives = sizes.clamp(max=k) if self._fill else torch.full_like(sizes, k)  # (C,)
        self._gives: list[int] = gives.tolist()
        chunks = (sizes // k).clamp(min=1)  # (C,)
        self._chunks = chunks.to(torch.float64)  # (C,) multinomial weights need floats
        self._len = int((chunks * gives).sum()) // (p * k)  # one pass over the usable items
        self.epoch: int = 0

    @property
    def p(self) -> int:
        """Number of distinct labels per global batch."""
        return self._p

    @property
    def k(self) -> int:
        """Number of items per label in a batch."""
        return self._k

    @property
    def batch_size(self) -> int:
        """Number of indices in each yielded batch: ``p * k // num_replicas``."""
        return self._p * self._k // self._num_replicas

    @property
    def num_left_out(self) -> int:
        """Number of classes never sampled: fewer than 2 items with ``"fill"``, fewer than
        ``k`` with ``"drop"``, none with ``"replace"``."""
        return self._num_left_out

    @property
    def classes(self) -> torch.Tensor:
        """(C,) int64 tensor of the sorted unique usable labels (a copy)."""
        return self._classes.clone()

    def __len__(self) -> int:
        """Number of batches per epoch, ``sum(max(1, n_c // k) * min(k, n_c)) // (p * k)``
        over the usable classes (``sum(max(1, n_c // k)) // p`` when no class is small or with
        ``"replace"`` and ``"drop"``); the same on every rank."""
        return self._len

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by the next iteration (for resuming and distributed training).

        Args:
            epoch: a non-negative integer; all ranks must pass the same value.
        """
        self.epoch = _check_int("epoch", epoch, 0)

    def _epoch_seed(self, epoch: int) -> int:
        """Seed of the generator for ``epoch``, folded into ``[0, 2**64)``."""
        return (self.seed * _SEED_STRIDE + epoch) % (1 << 64)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield ``len(self)`` batches of ``p * k // num_replicas`` indices for :attr:`epoch`.

        The epoch is read when ``iter()`` is called; :attr:`epoch` advances by one once the
        returned iterator is exhausted (unless :meth:`set_epoch` was called meanwhile).
        """
        return self._iterate(self.epoch)

    def _iterate(self, epoch: int) -> Iterator[list[int]]:
        p, k = self._p, self._k
        size = p * k
        gen = torch.Generator().manual_seed(self._epoch_seed(epoch))
        remaining = self._chunks.clone()  # (C,) chunks left per class this epoch
        perms: list[torch.Tensor | None] = [None] * len(self._groups)
        cursors = [0] * len(self._groups)
        start = self._rank * self.batch_size
        stop = start + self.batch_size
        # Candidates drawn per batch: p exactly, or with "fill" enough to fill any batch.
        draws = min(len(self._groups), size) if self._fill else p

        for _ in range(self._len):
            weights = remaining + _EPS_WEIGHT  # (C,) > 0, so `draws` distinct classes exist
            chosen = torch.multinomial(weights, draws, replacement=False, generator=gen)
            takes = _plan(chosen.tolist(), self._gives, size, pairs=self._fill and k >= 2)
            parts: list[torch.Tensor] = []
            for c, t in takes:
                items = self._groups[c]  # (n_c,)
                n_c = items.numel()
                if n_c < k:
                    if self._fill:  # t of its items, each once
                        parts.append(items[torch.randperm(n_c, generator=gen)[:t]])  # (t,)
                        continue
                    # All items once, plus k - n_c draws with replacement, shuffled.
                    extra = items[torch.randint(n_c, (k - n_c,), generator=gen)]  # (k - n_c,)
                    padded = torch.cat([items, extra])  # (k,)
                    parts.append(padded[torch.randperm(k, generator=gen)])
                    continue
                perm = perms[c]
                if perm is None or cursors[c] + t > n_c:
                    perm = items[torch.randperm(n_c, generator=gen)]  # (n_c,)
                    perms[c] = perm
                    cursors[c] = 0
                parts.append(perm[cursors[c] : cursors[c] + t])  # (t,)
                cursors[c] += t
            used = torch.tensor([c for c, _ in takes], dtype=torch.int64)  # (classes in batch,)
            remaining[used] = (remaining[used] - 1).clamp(min=0)
            batch = torch.cat(parts)  # (p * k,) class by class
            yield batch[start:stop].tolist()

        if self.epoch == epoch:
            self.epoch = epoch + 1


def _plan(
    candidates: list[int], gives: list[int], size: int, *, pairs: bool
) -> list[tuple[int, int]]:
    """``(class, number of items)`` for one batch, in draw order, the numbers summing to
    ``size``: each candidate class ``c`` gives up to ``gives[c]`` items, taken greedily.

    With ``pairs``, no class is left with one item while another could give two: a class
    gives one item fewer rather than leave one slot, and a class of two is passed over when
    three slots remain. A second pass fills what is still missing (a class may then give a
    single item, only when the sizes leave no other way). The caller guarantees
    ``sum(gives[c] for c in candidates) >= size``.
    """
    takes = [0] * len(candidates)
    need = size
    for i, c in enumerate(candidates):
        if need == 0:
            break
        t = min(gives[c], need)
        if pairs and need - t == 1:
            if t <= 2:
                continue  # t == 2, need == 3: a later class can give 3
            t -= 1
        takes[i] = t
        need -= t
    for i, c in enumerate(candidates):  # rare: sizes that cannot fill the batch in pairs
        if need == 0:
            break
        extra = min(gives[c] - takes[i], need)
        takes[i] += extra
        need -= extra
    return [(c, t) for c, t in zip(candidates, takes, strict=True) if t > 0]


def default_pk(
    labels: Sequence[int] | torch.Tensor | npt.NDArray[Any],
    *,
    p: int | None = None,
    k: int | None = None,
    multiple_of: int = 1,
) -> tuple[int, int]:
    """The batch shape ``(p, k)`` derived from the class sizes, for the ones given as None.

    The rule, with ``m`` the median size of the classes of at least 2 items (the classes
    :class:`PKSampler` samples by default) and ``C`` their number:

    - big classes, ``m >= BIG_CLASS`` (16): ``k = 16`` and ``p = min(10, C)``, a batch of
      160, the defaults tuned on Fashion-MNIST (docs/results.md);
    - small classes: ``k = max(2, min(4, m))`` and ``p = ceil(TARGET_BATCH / k)`` (128
      items) capped by ``C``.

    A given ``p`` or ``k`` is kept. A derived ``p`` is then lowered (not below 1) until the
    global batch ``p * k`` is a multiple of ``multiple_of`` (the number of data-parallel
    processes) and the classes can fill it without repeats (``sum(min(k, n_c)) >= p * k``).

    Args:
        labels: (N,) integer labels of the training items.
        p, k: the given values, or None to derive them.
        multiple_of: the number of processes sharing each batch, >= 1.

    Returns:
        ``(p, k)``, both >= 1.

    Corner cases:
        - No class of 2 items or more: ``m`` is taken over all classes (so ``k = 2``) and
          ``p`` is at least 1; :class:`PKSampler` then says why no batch can be built.
        - The median of an even number of classes is the lower middle size.

    Example:
        >>> default_pk([c for c in range(10) for _ in range(100)])
        (10, 16)
        >>> default_pk([c for c in range(500) for _ in range(3 + c % 3)])
        (32, 4)
        >>> default_pk([c for c in range(500) for _ in range(3)], multiple_of=4)
        (40, 3)
    """
    sizes = torch.unique(_labels_to_tensor(labels), return_counts=True)[1]  # (C_all,)
    usable = sizes[sizes >= 2]  # (C,)
    pool = usable if usable.numel() else sizes
    median = int(pool.median()) if pool.numel() else 0
    num_classes = max(1, int(usable.numel()))
    big = median >= BIG_CLASS
    if k is None:
        k = BIG_CLASS if big else max(2, min(4, median))
    if p is not None:
        return p, k
    p = min(10 if big else -(-TARGET_BATCH // k), num_classes)
    available = int(usable.clamp(max=k).sum())
    while p > 1 and ((p * k) % multiple_of or p * k > available):
        p -= 1
    return p, k
