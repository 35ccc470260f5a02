"""runtime/alloc.py: outputs are poisoned inside poisoning() (the test helpers' guard against
elements a kernel forgot to write), only in the thread that asked, and the allocators' cheap
first test (a count of open contexts) goes back to zero."""

import threading

import torch

from tritonic.runtime import alloc


def test_poisoning_fills_outputs_then_stops():
    assert alloc._active == 0 and not alloc.poison_outputs()
    with alloc.poisoning():
        assert alloc._active == 1
        assert torch.isnan(alloc.empty((4,), dtype=torch.float32, device="cpu")).all()
        assert torch.isnan(alloc.empty_like(torch.zeros(2, 3))).all()
        assert (alloc.empty((3,), dtype=torch.int32, device="cpu") == -(2**30)).all()
        with alloc.poisoning(False):
            assert not alloc.poison_outputs()
        assert alloc.poison_outputs()
    assert alloc._active == 0 and not alloc.poison_outputs()


def test_poisoning_is_per_thread():
    inside, release = threading.Event(), threading.Event()

    def other():
        with alloc.poisoning():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(5)
        assert alloc._active == 1 and not alloc.poison_outputs()  # another thread's context
    finally:
        release.set()
        t.join()
    assert alloc._active == 0
