"""Progress generators and their blocking twins."""

import inspect

import pytest

from napari_brainfeatures.progress import Progress, ProgressGen, blocking, run


def iter_count(n: int, *, start: int = 0) -> ProgressGen[int]:
    """Count to n."""
    for i in range(start, n):
        yield Progress(i + 1, n, f"{i + 1}/{n}")
    return n - start


count = blocking(iter_count)


def test_run_returns_the_result_and_reports_every_record():
    seen = []
    assert run(iter_count(3), seen.append) == 3
    assert [r.step for r in seen] == [1, 2, 3]
    assert seen[-1].fraction == 1.0


def test_blocking_twin_has_the_name_signature_and_result():
    assert count(5, start=2) == 3
    assert count.__name__ == "count"
    sig = inspect.signature(count)
    assert list(sig.parameters) == ["n", "start"]
    assert sig.return_annotation in (int, "int")
    assert "iter_count" in count.__doc__ and "Count to n." in count.__doc__


def test_run_closes_the_generator_when_the_callback_fails():
    cleaned = []

    def gen():
        try:
            yield Progress(1, 2)
            yield Progress(2, 2)
        finally:
            cleaned.append(True)

    def boom(record):
        raise KeyboardInterrupt

    g = gen()
    with pytest.raises(KeyboardInterrupt):
        run(g, boom)
    assert cleaned == [True]
