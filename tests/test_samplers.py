"""Tests for tripletlab.samplers.PKSampler.

Every label layout is built deterministically from explicit seeds (no shared fixture), and
batch invariants are checked by a plain-Python checker independent of the sampler's code.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from tripletlab.samplers import PKSampler, default_pk

# --------------------------------------------------------------------------- label layouts


def balanced(num_classes: int, per_class: int) -> list[int]:
    """``per_class`` items of each of ``num_classes`` labels, interleaved (not sorted)."""
    return [i % num_classes for i in range(num_classes * per_class)]


def unbalanced(seed: int, num_classes: int = 12, low: int = 4, high: int = 30) -> list[int]:
    """Class sizes drawn in ``[low, high]``, labels shuffled and non-contiguous (x 7 - 3)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(low, high + 1, size=num_classes)
    labels = np.repeat(np.arange(num_classes) * 7 - 3, sizes)
    return [int(v) for v in rng.permutation(labels)]


def with_small_classes() -> list[int]:
    """Ten classes: sizes 1, 2, 3 (smaller than k=4 below) and 4..24."""
    sizes = [1, 2, 3, 4, 5, 8, 9, 12, 17, 24]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    return labels[::-1]


def make(labels: list[int], p: int, k: int, **kwargs: object) -> PKSampler:
    """Build a sampler, silencing the small-class warning (tested separately)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return PKSampler(labels, p, k, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- invariant checker


def check_pk_batch(batch: list[int], labels: list[int], p: int, k: int) -> None:
    """Assert ``batch`` is p contiguous groups of k indices, each group one label, p labels."""
    assert isinstance(batch, list)
    assert len(batch) == p * k
    assert all(type(i) is int and 0 <= i < len(labels) for i in batch)
    group_labels = []
    for g in range(p):
        group = batch[g * k : (g + 1) * k]
        ys = {labels[i] for i in group}
        assert len(ys) == 1, f"group {g} mixes labels {ys}"
        group_labels.append(ys.pop())
    assert len(set(group_labels)) == p, f"labels repeat across groups: {group_labels}"
    assert Counter(labels[i] for i in batch) == dict.fromkeys(group_labels, k)


def expected_len(labels: list[int], p: int, k: int, drop: bool = False) -> int:
    counts = Counter(labels).values()
    return sum(max(1, n // k) for n in counts if not (drop and n < k)) // p


LAYOUTS = {
    "balanced": balanced(9, 12),
    "unbalanced": unbalanced(0),
    "small": with_small_classes(),
}
PK = [(2, 2), (3, 4), (5, 3), (1, 1), (8, 1)]
SEEDS = [0, 1, 17]


# --------------------------------------------------------------------------- batch structure


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(("p", "k"), PK)
@pytest.mark.parametrize("seed", SEEDS)
def test_batches_are_p_labels_times_k(layout: str, p: int, k: int, seed: int) -> None:
    labels = LAYOUTS[layout]
    sampler = make(labels, p, k, seed=seed, small_classes="replace")
    batches = list(sampler)
    assert len(batches) == len(sampler) == expected_len(labels, p, k)
    for batch in batches:
        check_pk_batch(batch, labels, p, k)


@pytest.mark.parametrize(("p", "k"), [(3, 4), (4, 2), (5, 5)])
@pytest.mark.parametrize("seed", SEEDS)
def test_drop_batches_and_len(p: int, k: int, seed: int) -> None:
    labels = with_small_classes()
    sampler = make(labels, p, k, seed=seed, small_classes="drop")
    batches = list(sampler)
    assert len(batches) == len(sampler) == expected_len(labels, p, k, drop=True)
    small = {c for c, n in Counter(labels).items() if n < k}
    for batch in batches:
        check_pk_batch(batch, labels, p, k)
        assert not {labels[i] for i in batch} & small


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=12),
    k=st.integers(1, 5),
    p_frac=st.floats(0.0, 1.0),
    seed=st.integers(-(2**40), 2**40),
    epoch=st.integers(0, 5),
)
def test_invariants_random_layouts(
    sizes: list[int], k: int, p_frac: float, seed: int, epoch: int
) -> None:
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    p = max(1, round(p_frac * len(sizes)))
    sampler = make(labels, p, k, seed=seed, small_classes="replace")
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) == expected_len(labels, p, k) >= 1
    for batch in batches:
        check_pk_batch(batch, labels, p, k)
    assert sampler.epoch == epoch + 1


@pytest.mark.parametrize(("num_classes", "per_class", "p", "k"), [(10, 8, 4, 2), (20, 12, 5, 4)])
def test_len_balanced_is_n_over_pk(num_classes: int, per_class: int, p: int, k: int) -> None:
    labels = balanced(num_classes, per_class)
    assert len(PKSampler(labels, p, k)) == len(labels) // (p * k)


@pytest.mark.parametrize("seed", SEEDS)
def test_no_repeated_index_when_classes_have_k_items(seed: int) -> None:
    labels = unbalanced(seed, low=5, high=13)
    for epoch in range(3):
        sampler = PKSampler(labels, 4, 5, seed=seed)
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(set(batch)) == len(batch)


@pytest.mark.parametrize("seed", SEEDS)
def test_items_follow_a_permutation_within_a_class(seed: int) -> None:
    # The first n_c // k appearances of a class in an epoch come from one permutation of its
    # items, so they never share an index (a sampler drawing k items afresh each time would).
    labels = unbalanced(seed, low=8, high=30)
    k = 4
    sizes = Counter(labels)
    seen: dict[int, list[set[int]]] = {}
    for batch in PKSampler(labels, 3, k, seed=seed):
        for g in range(3):
            group = batch[g * k : (g + 1) * k]
            seen.setdefault(labels[group[0]], []).append(set(group))
    for c, groups in seen.items():
        first = groups[: sizes[c] // k]
        assert len(set().union(*first)) == k * len(first)


def test_classes_drawn_in_proportion_to_chunks() -> None:
    # Class 0 has 10 chunks of k=4, nine classes have one chunk each: 19 chunks, p=2 -> 9
    # batches. Chunk-weighted draws put class 0 in almost every batch; uniform draws would
    # put it in about 9 * 2 / 10 = 1.8 of them.
    labels = [0] * 40 + [c for c in range(1, 10) for _ in range(4)]
    appearances = []
    for seed in range(5):
        sampler = PKSampler(labels, 2, 4, seed=seed)
        assert len(sampler) == 9
        appearances.append(sum(labels[b[0]] == 0 or labels[b[4]] == 0 for b in sampler))
    assert sum(appearances) / len(appearances) >= 7


@pytest.mark.parametrize("seed", SEEDS)
def test_exhausted_classes_refill_late_batches(seed: int) -> None:
    # Chunks: 10 + 1 + 1 = 12, p=3 -> 4 batches. After the first batch (which must take all
    # three classes) classes 1 and 2 have no chunks left, yet they must fill the next three
    # batches: a class with no chunks left is still drawn, with a fresh permutation.
    labels = [0] * 40 + [1] * 4 + [2] * 4
    sampler = PKSampler(labels, 3, 4, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    for batch in batches:
        check_pk_batch(batch, labels, 3, 4)
        assert {i for i in batch if labels[i] == 1} == {40, 41, 42, 43}
    assert len({i for batch in batches for i in batch if labels[i] == 0}) == 16


def test_fill_in_classes_are_drawn_uniformly() -> None:
    # Chunks: 10 + 6 x 1 = 16, p=3 -> 5 batches, 15 slots: class 0 fills one slot per batch,
    # each small class one slot for its chunk, and 4 slots per epoch go to exhausted small
    # classes, uniformly at random. Over 20 seeds every small class must get some of those
    # (zero-weight draws in torch.multinomial would always pick the same classes).
    labels = [0] * 40 + [c for c in range(1, 7) for _ in range(4)]
    appearances: Counter[int] = Counter()
    for seed in range(20):
        for batch in PKSampler(labels, 3, 4, seed=seed):
            appearances.update(labels[batch[g * 4]] for g in range(3))
    assert appearances[0] == 100
    assert all(appearances[c] > 20 for c in range(1, 7)), appearances


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("num_classes", "per_class", "p", "k"), [(10, 8, 4, 2), (20, 12, 5, 4)])
def test_epoch_covers_most_items(
    seed: int, num_classes: int, per_class: int, p: int, k: int
) -> None:
    labels = balanced(num_classes, per_class)
    sampler = PKSampler(labels, p, k, seed=seed)
    for _ in range(3):
        seen = {i for batch in sampler for i in batch}
        assert len(seen) >= 0.9 * len(labels)


# --------------------------------------------------------------------------- small classes


def test_class_of_one_item_yields_k_copies() -> None:
    labels = [5, 7, 7, 7, 7, 9, 9, 9, 9, 9]  # class 5 has one item (index 0)
    # p == number of classes: class 5 is in every batch
    sampler = make(labels, 3, 3, seed=0, small_classes="replace")
    batches = list(sampler)
    assert batches
    for batch in batches:
        check_pk_batch(batch, labels, 3, 3)
        assert batch.count(0) == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_replace_uses_every_item_of_a_small_class(seed: int) -> None:
    # Class 0 (indices 0, 1) has n_c=2 < k=4 and, with p equal to the number of classes, is in
    # every batch; each time it must bring both items (k draws with replacement alone would
    # miss one in 1/8 of the batches, so ~100 batches catch that).
    labels = [0, 0] + [1] * 40 + [2] * 40
    sampler = make(labels, 3, 4, seed=seed, small_classes="replace")
    assert len(sampler) == 7
    num_batches = 0
    for _ in range(5):
        for batch in sampler:
            group = [i for i in batch if labels[i] == 0]
            assert len(group) == 4
            assert set(group) == {0, 1}
            num_batches += 1
    assert num_batches == 35


def test_replace_warns_once_with_count() -> None:
    labels = with_small_classes()  # sizes 1, 2, 3 are < k=4
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        PKSampler(labels, 3, 4, small_classes="replace")
    assert len(record) == 1
    assert issubclass(record[0].category, UserWarning)
    with pytest.warns(UserWarning, match=r"3 of 10 classes have fewer than k=4 items"):
        sampler = PKSampler(labels, 3, 4, small_classes="replace")
    assert sampler.classes.tolist() == list(range(10))


def test_drop_warns_and_excludes_small_classes() -> None:
    labels = with_small_classes()
    with pytest.warns(UserWarning, match=r"dropped 3 of 10 classes with fewer than k=4"):
        sampler = PKSampler(labels, 3, 4, small_classes="drop")
    assert sampler.classes.tolist() == list(range(3, 10))
    small_indices = {i for i, y in enumerate(labels) if y < 3}
    for epoch in range(4):
        sampler.set_epoch(epoch)
        assert not {i for batch in sampler for i in batch} & small_indices


def test_no_warning_without_small_classes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PKSampler(balanced(5, 4), 2, 4)
        PKSampler(balanced(5, 4), 2, 4, small_classes="drop")


# --------------------------------------------------------------------------- determinism, epochs


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_and_epoch_give_same_batches(seed: int) -> None:
    labels = unbalanced(seed)
    a, b = PKSampler(labels, 4, 3, seed=seed), PKSampler(labels, 4, 3, seed=seed)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    a.set_epoch(3)
    first = list(a)
    a.set_epoch(3)
    assert list(a) == first


def test_different_seeds_and_epochs_differ() -> None:
    labels = unbalanced(0)
    runs = []
    for seed in range(3):
        for epoch in range(3):
            sampler = PKSampler(labels, 4, 3, seed=seed)
            sampler.set_epoch(epoch)
            runs.append(list(sampler))
    assert all(runs[i] != runs[j] for i in range(len(runs)) for j in range(i))


def test_epoch_advances_after_full_iteration() -> None:
    labels = unbalanced(1)
    sampler = PKSampler(labels, 4, 3, seed=5)
    assert sampler.epoch == 0
    epochs = [list(sampler) for _ in range(3)]
    assert sampler.epoch == 3
    assert epochs[0] != epochs[1] != epochs[2]
    reference = PKSampler(labels, 4, 3, seed=5)
    for e, batches in enumerate(epochs):
        reference.set_epoch(e)
        assert list(reference) == batches
    # A resumed run continues the same sequence.
    resumed = PKSampler(labels, 4, 3, seed=5)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    assert resumed.epoch == 3


def test_epoch_unchanged_by_abandoned_iteration_and_kept_if_set_meanwhile() -> None:
    sampler = PKSampler(unbalanced(2), 4, 3, seed=0)
    it = iter(sampler)
    next(it)
    del it
    assert sampler.epoch == 0
    it = iter(sampler)  # reads epoch 0 now
    sampler.set_epoch(7)
    from_epoch_0 = list(it)
    sampler.set_epoch(0)
    assert from_epoch_0 == list(sampler)
    sampler.set_epoch(4)
    it = iter(sampler)
    sampler.set_epoch(9)
    list(it)
    assert sampler.epoch == 9


def test_global_rngs_are_untouched_and_irrelevant() -> None:
    labels = unbalanced(3)
    torch.manual_seed(123)
    random.seed(123)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    first = list(PKSampler(labels, 4, 3, seed=0))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    torch.manual_seed(999)
    random.seed(999)
    assert list(PKSampler(labels, 4, 3, seed=0)) == first


def test_label_containers_are_equivalent() -> None:
    labels = unbalanced(4)
    expected = list(PKSampler(labels, 3, 2, seed=1))
    for container in (
        tuple(labels),
        np.asarray(labels, dtype=np.int32),
        np.asarray(labels, dtype=np.int64),
        torch.tensor(labels),
        torch.tensor(labels, dtype=torch.int16),
    ):
        assert list(PKSampler(container, 3, 2, seed=1)) == expected


def test_classes_is_sorted_read_only_copy() -> None:
    sampler = PKSampler([4, -2, 4, 9, -2, 9], 2, 2)
    classes = sampler.classes
    assert classes.dtype == torch.int64
    assert classes.tolist() == [-2, 4, 9]
    classes[0] = 100
    assert sampler.classes.tolist() == [-2, 4, 9]
    with pytest.raises(AttributeError):
        sampler.classes = classes  # type: ignore[misc]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (
            balanced(3, 4),
            {"p": 4, "k": 2, "small_classes": "replace"},
            r"p=4 classes .* only 3 usable classes \(3 in total\)",
        ),
        (
            balanced(3, 4),
            {"p": 4, "k": 2},
            r"need p=4 x k=2 = 8 items .* the 3 classes with at least 2 items \(3 in total\) give "
            r"at most 6",
        ),
        ([0, 1, 2, 2], {"p": 2, "k": 2}, r"the 1 classes with at least 2 items \(3 in total\)"),
        (
            with_small_classes(),
            {"p": 8, "k": 4, "small_classes": "drop"},
            r"p=8 classes with at least k=4 items .* only 7 usable classes \(10 in total\)",
        ),
        ([], {"p": 1, "k": 1}, r"the 0 classes with at least 1 items \(0 in total\)"),
        ([], {"p": 1, "k": 1, "small_classes": "drop"}, r"only 0 usable classes \(0 in total\)"),
        ([0.0, 1.0, 1.0], {"p": 1, "k": 1}, r"labels must be integers, got dtype float64"),
        (torch.tensor([0.0, 1.0]), {"p": 1, "k": 1}, r"labels must be integers.*torch.float32"),
        (torch.tensor([True, False]), {"p": 1, "k": 1}, r"labels must be integers.*torch.bool"),
        (["a", "b"], {"p": 1, "k": 1}, r"labels must be integers"),
        ([[0, 1], [1, 0]], {"p": 1, "k": 1}, r"labels must be 1-D .* shape \(2, 2\)"),
        (torch.zeros(2, 3, dtype=torch.long), {"p": 1, "k": 1}, r"must be 1-D .*\(2, 3\)"),
        (np.int64(3), {"p": 1, "k": 1}, r"labels must be 1-D"),
        (balanced(3, 4), {"p": 0, "k": 2}, r"p must be an integer >= 1, got p=0"),
        (balanced(3, 4), {"p": 2, "k": 0}, r"k must be an integer >= 1, got k=0"),
        (balanced(3, 4), {"p": 2.0, "k": 2}, r"p must be an integer >= 1, got p=2.0"),
        (balanced(3, 4), {"p": 2, "k": True}, r"k must be an integer >= 1, got k=True"),
        (
            balanced(3, 4),
            {"p": 2, "k": 2, "small_classes": "pad"},
            r"small_classes must be one of \['drop', 'fill', 'replace'\], got small_classes='pad'",
        ),
        (balanced(3, 4), {"p": 2, "k": 2, "num_replicas": 0}, r"num_replicas must be .* >= 1"),
        (
            balanced(3, 4),
            {"p": 2, "k": 2, "num_replicas": 2, "rank": 2},
            r"rank must be an integer in \[0, num_replicas\) = \[0, 2\), got rank=2",
        ),
        (balanced(3, 4), {"p": 2, "k": 2, "rank": -1}, r"got rank=-1"),
        (
            balanced(3, 4),
            {"p": 3, "k": 3, "num_replicas": 2},
            r"num_replicas=2 must divide the global batch size p\*k=3\*3=9",
        ),
        (balanced(3, 4), {"p": 2, "k": 2, "seed": 1.5}, r"seed must be an integer"),
    ],
)
def test_invalid_arguments_raise(labels: object, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PKSampler(labels, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("epoch", [-1, 1.0, True])
def test_set_epoch_rejects_bad_values(epoch: object) -> None:
    sampler = PKSampler(balanced(3, 4), 2, 2)
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0"):
        sampler.set_epoch(epoch)  # type: ignore[arg-type]


def test_too_few_classes_raises_before_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"lower p"):
            PKSampler([0, 1, 1], 3, 2)


# --------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("num_replicas", [2, 4])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_shards_partition_the_global_batch(num_replicas: int, seed: int, layout: str) -> None:
    labels = LAYOUTS[layout]
    p, k = 4, 3  # p*k = 12, divisible by 2 and 4; 4 ranks get 3 items each (classes straddle)
    full = make(labels, p, k, seed=seed, small_classes="replace")
    shards = [
        make(labels, p, k, seed=seed, small_classes="replace", num_replicas=num_replicas, rank=r)
        for r in range(num_replicas)
    ]
    assert {len(s) for s in shards} == {len(full)}
    assert {s.batch_size for s in shards} == {p * k // num_replicas}
    for epoch in (0, 1):
        for s in (full, *shards):
            s.set_epoch(epoch)
        per_rank = [list(s) for s in shards]
        global_batches = list(full)
        assert all(len(batches) == len(global_batches) for batches in per_rank)
        for step, global_batch in enumerate(global_batches):
            slices = [batches[step] for batches in per_rank]
            assert all(len(sl) == p * k // num_replicas for sl in slices)
            assert [i for sl in slices for i in sl] == global_batch
            check_pk_batch(global_batch, labels, p, k)
    assert all(s.epoch == 2 for s in shards)


# --------------------------------------------------------------------------- DataLoader


def test_works_as_dataloader_batch_sampler() -> None:
    labels = unbalanced(5)
    n = len(labels)
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)  # (N, 3), row i is i
    y = torch.tensor(labels)
    p, k = 4, 3
    sampler = PKSampler(labels, p, k, seed=2)
    loader = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    assert len(loader) == len(sampler)
    batches = list(loader)
    assert len(batches) == len(sampler)
    reference = PKSampler(labels, p, k, seed=2)
    for (xb, yb), indices in zip(batches, reference, strict=True):
        assert xb.shape == (p * k, 3)
        assert yb.shape == (p * k,)
        assert xb[:, 0].long().tolist() == indices
        assert torch.equal(yb, y[indices])
        assert sorted(Counter(yb.tolist()).values()) == [k] * p
    assert sampler.epoch == 1


# --------------------------------------------------------------------------- "fill" (the default)


def check_fill_batch(batch: list[int], labels: list[int], size: int, k: int) -> list[int]:
    """Assert ``batch`` is ``size`` distinct indices in contiguous one-label groups of at most
    ``min(k, class size)`` items, at most one group of a single item; return the group sizes."""
    assert isinstance(batch, list)
    assert len(batch) == size
    assert all(type(i) is int and 0 <= i < len(labels) for i in batch)
    assert len(set(batch)) == size, "an index repeats within the batch"
    class_sizes = Counter(labels)
    groups: list[tuple[int, int]] = []  # (label, items) in batch order
    for i in batch:
        if groups and groups[-1][0] == labels[i]:
            groups[-1] = (labels[i], groups[-1][1] + 1)
        else:
            groups.append((labels[i], 1))
    assert len({y for y, _ in groups}) == len(groups), "a label's items are not contiguous"
    for y, n in groups:
        assert n <= min(k, class_sizes[y])
        assert class_sizes[y] >= min(2, k), "a class of one item was sampled"
    assert sum(n == 1 for _, n in groups) <= (1 if k >= 2 else size)
    return [n for _, n in groups]


def fill_len(labels: list[int], p: int, k: int) -> int:
    sizes = [n for n in Counter(labels).values() if n >= min(2, k)]
    return sum(max(1, n // k) * min(k, n) for n in sizes) // (p * k)


def many_small(seed: int, num_classes: int = 200, low: int = 1, high: int = 6) -> list[int]:
    """Many classes of ``low``..``high`` items, shuffled (a CUB/SOP-like layout)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(low, high + 1, size=num_classes)
    return [int(v) for v in rng.permutation(np.repeat(np.arange(num_classes), sizes))]


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=14),
    k=st.integers(1, 6),
    p=st.integers(1, 8),
    seed=st.integers(-(2**40), 2**40),
    epoch=st.integers(0, 5),
)
def test_fill_invariants_random_layouts(
    sizes: list[int], k: int, p: int, seed: int, epoch: int
) -> None:
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    if sum(min(k, n) for n in sizes if n >= min(2, k)) < p * k:
        with pytest.raises(ValueError, match="lower p or k"):
            make(labels, p, k, seed=seed)
        return
    sampler = make(labels, p, k, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) == fill_len(labels, p, k) >= 1
    for batch in batches:
        check_fill_batch(batch, labels, p * k, k)
    assert sampler.epoch == epoch + 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("p", "k"), [(32, 4), (43, 3), (10, 5), (7, 2)])
def test_fill_many_small_classes(seed: int, p: int, k: int) -> None:
    labels = many_small(seed)
    sampler = make(labels, p, k, seed=seed)
    sizes = Counter(labels)
    seen: set[int] = set()
    # One epoch is one pass less the remainder of (items // batch): up to a batch of items
    # (~18% of these 700) go unseen per epoch, so every class shows within ten epochs.
    for epoch in range(10):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == fill_len(labels, p, k)
        for batch in batches:
            groups = check_fill_batch(batch, labels, p * k, k)
            if k >= 2 and p * k % 2 == 0:
                assert min(groups) >= 2  # sizes 2..6 always allow pairs for an even batch
            seen.update(labels[i] for i in batch)
    assert seen == {c for c, n in sizes.items() if n >= 2}  # every usable class appears


def test_fill_leaves_out_singletons_with_one_counted_warning() -> None:
    labels = [0] + [1, 1] + [2] * 3 + [3] + [4] * 9 + [5]  # classes 0, 3, 5 have one item
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sampler = PKSampler(labels, 2, 4)
    assert [str(w.message) for w in record] == [
        "left out 3 of 6 classes with fewer than 2 items (no positive pair; small_classes='fill')"
    ]
    assert sampler.num_left_out == 3
    assert sampler.classes.tolist() == [1, 2, 4]
    singles = {0, 6, 16}
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in sampler:
            check_fill_batch(batch, labels, 8, 4)
            assert not set(batch) & singles
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # classes of 2..k-1 items alone do not warn
        assert PKSampler([0, 0, 1, 1, 1, 2, 2, 2, 2], 2, 4).num_left_out == 0


def test_fill_small_class_gives_all_its_items() -> None:
    # Classes 0 (2 items) and 1 (3 items) give all their items once when drawn; a batch of
    # 3 x 4 = 12 then needs at least three classes (at most k=4 items each).
    labels = [0, 0, 1, 1, 1] + [2] * 20 + [3] * 20
    for seed in SEEDS:
        for batch in make(labels, 3, 4, seed=seed):
            groups = check_fill_batch(batch, labels, 12, 4)
            assert len(groups) >= 3


def test_fill_odd_batch_of_pairs_has_one_single() -> None:
    labels = [c for c in range(20) for _ in range(2)]  # every class holds 2 items
    sampler = make(labels, 5, 3, seed=0)  # 15 slots: 7 pairs and one single item
    for batch in sampler:
        assert sorted(check_fill_batch(batch, labels, 15, 3)) == [1] + [2] * 7


@pytest.mark.parametrize("seed", SEEDS)
def test_fill_is_the_old_sampler_when_no_class_is_small(seed: int) -> None:
    labels = unbalanced(seed, low=6, high=30)
    for p, k in [(3, 4), (5, 6), (2, 2)]:
        fill, replace = (
            PKSampler(labels, p, k, seed=seed),
            make(labels, p, k, seed=seed, small_classes="replace"),
        )
        for epoch in range(3):
            fill.set_epoch(epoch)
            replace.set_epoch(epoch)
            assert list(fill) == list(replace)


@pytest.mark.parametrize("seed", SEEDS)
def test_fill_deterministic_per_seed_and_epoch(seed: int) -> None:
    labels = many_small(seed)
    a, b = make(labels, 32, 4, seed=seed), make(labels, 32, 4, seed=seed)
    epochs = []
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        epochs.append(list(a))
        assert epochs[-1] == list(b)
    assert epochs[0] != epochs[1] != epochs[2]
    assert list(make(labels, 32, 4, seed=seed + 1)) != epochs[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_fill_two_ranks_get_disjoint_equal_halves(seed: int) -> None:
    labels = many_small(seed)
    p, k = 43, 3  # 129 is odd: refused; 42 x 3 = 126 splits in two halves of 63
    with pytest.raises(ValueError, match="num_replicas=2 must divide"):
        make(labels, p, k, num_replicas=2)
    p = 42
    full = make(labels, p, k, seed=seed)
    halves = [make(labels, p, k, seed=seed, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == len(full)
    for first, second, whole in zip(*halves, full, strict=True):
        assert len(first) == len(second) == 63
        assert not set(first) & set(second)
        assert first + second == whole


# --------------------------------------------------------------------------- default_pk


def sized(sizes: list[int]) -> list[int]:
    return [c for c, n in enumerate(sizes) for _ in range(n)]


@pytest.mark.parametrize(
    ("sizes", "kwargs", "expected"),
    [
        ([6000] * 10, {}, (10, 16)),  # Fashion-MNIST, MNIST: the tuned 10 x 16
        ([143] * 10, {}, (10, 16)),  # digits' training split
        ([100] * 4, {}, (4, 16)),  # P capped by the number of classes
        ([3, 4, 5] * 167, {}, (32, 4)),  # 501 classes of 3-5 items: K=4, 128
        ([3] * 500, {}, (43, 3)),  # median 3: K=3, 129
        ([3] * 500, {"multiple_of": 2}, (42, 3)),  # 126 splits over 2 processes
        ([2, 2, 3] * 100, {}, (64, 2)),  # median 2
        ([1] * 50 + [5] * 30, {}, (30, 4)),  # singletons do not count; P capped by 30 classes
        ([15] * 300, {}, (32, 4)),  # median just below 16
        ([16] * 300, {}, (10, 16)),
        ([3] * 500, {"k": 8}, (16, 8)),  # given K kept, P = 128 / K
        ([3] * 500, {"p": 20}, (20, 3)),  # given P kept
        ([2, 3], {}, (2, 2)),  # few items: P lowered until the classes fill the batch
        ([1] * 5, {}, (1, 2)),  # no usable class: the sampler will say why
    ],
)
def test_default_pk(sizes: list[int], kwargs: dict[str, int], expected: tuple[int, int]) -> None:
    labels = sized(sizes)
    assert default_pk(labels, **kwargs) == expected
    p, k = expected
    if sum(min(k, n) for n in sizes if n >= 2) >= p * k:
        make(labels, p, k, num_replicas=kwargs.get("multiple_of", 1))  # buildable
