"""Full collections paced by heap growth (haggle/gc_pacing.py): CPython's own full pass stays off while the rule is
installed, what young collections promote is counted, a pass runs once generation 2 has grown enough and frees
what had piled up there, and uninstalling gives CPython its rule back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from haggle.gc_pacing import FullCollections


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def full_passes() -> Iterator[list[int]]:
    """Generations collected while the test runs."""
    seen: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    gc.callbacks.append(on_gc)
    try:
        yield seen
    finally:
        gc.callbacks.remove(on_gc)


def _survivors(n: int) -> list[list[int]]:
    """`n` objects that live through the young collections their allocation sets off (they reach generation 2)."""
    return [[i] for i in range(n)]


def test_cpython_runs_no_full_pass_of_its_own_while_installed(full_passes: list[int]) -> None:
    gen2 = len(gc.get_objects(generation=2))
    many = max(300_000, gen2)  # well past CPython's rule: promoted objects over a quarter of generation 2
    policy = FullCollections(freeze=False, min_growth=10**9)
    policy.install()
    try:
        kept = _survivors(many)
        assert 1 in full_passes, "the allocation did set off young collections"
        assert 2 not in full_passes
    finally:
        policy.uninstall()
    del kept
    full_passes.clear()
    kept = _survivors(many)  # the control: the same allocation under CPython's rule
    assert 2 in full_passes
    del kept


def test_a_pass_runs_once_generation_2_has_grown_and_frees_what_piled_up_there() -> None:
    policy = FullCollections(freeze=False, growth=0.0, min_growth=5_000)
    policy.install()
    try:
        assert policy.check() is False  # nothing grew since the install
        nodes = [_Node() for _ in range(10_000)]
        gc.collect(1)  # the young collections promote the live nodes to generation 2
        probe = weakref.ref(nodes[0])
        del nodes  # cyclic garbage in generation 2: young collections never look at it again
        assert probe() is not None
        assert policy.check() is True
        assert probe() is None
        assert policy.passes == 1 and policy.last_pause_s > 0
        assert policy.check() is False  # the pass reset the baseline
    finally:
        policy.uninstall()


def test_the_next_pass_waits_for_the_heap_to_double() -> None:
    policy = FullCollections(freeze=False, growth=1.0, min_growth=0)
    policy.install()
    try:
        base = _survivors(20_000)
        gc.collect()  # any full pass (ours or anyone's) resets the count: what it kept is the new baseline
        assert policy.promoted == 0 and policy.baseline >= len(base)
        assert policy.due_at == policy.baseline  # promoted objects as many as the last pass kept
        kept = _survivors(policy.baseline // 2)
        gc.collect(1)  # moves them into generation 2, as young collections do
        assert policy.baseline // 2 <= policy.promoted < policy.baseline
        assert policy.check() is False  # half again is not double
        kept += _survivors(policy.baseline)
        gc.collect(1)
        assert policy.check() is True
        assert policy.promoted == 0 and policy.baseline >= len(base) + len(kept)
    finally:
        policy.uninstall()


def test_uninstall_is_counted_across_instances() -> None:
    cpython = gc.get_threshold()
    first, second = FullCollections(freeze=False), FullCollections(freeze=False)
    first.install()
    second.install()
    first.uninstall()
    assert gc.get_threshold() != cpython  # the second one still runs the pacing
    second.uninstall()
    assert gc.get_threshold() == cpython
