"""The runtime's shared helpers: the batch loop (edgeclf.model.batching) and the progress bars
(edgeclf.progress) that the runtime, the export and training all use."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from edgeclf.model.batching import in_batches
from edgeclf.progress import Bars, progress_bar


def test_in_batches_runs_every_item_once_with_a_short_last_batch():
    x = np.arange(7 * 2).reshape(7, 2)
    sizes: list[int] = []
    seen: list[int] = []
    out = in_batches(lambda b: (sizes.append(len(b)), b * 10)[1], x, 3, progress=seen.append)
    assert sizes == [3, 3, 1] and seen == [3, 3, 1]
    np.testing.assert_array_equal(out, x * 10)


def test_in_batches_takes_lists_and_handles_nothing():
    out = in_batches(lambda b: np.stack(b).sum(axis=1, keepdims=True), [np.ones(2)] * 5, 2)
    np.testing.assert_array_equal(out, np.full((5, 1), 2.0))
    calls: list = []
    empty = in_batches(calls.append, np.zeros((0, 4, 4, 3), np.uint8), 8, progress=calls.append)
    assert calls == [] and empty.shape == (0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        in_batches(lambda b: b, np.zeros(3), 0)


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=False, highlight=False), buf


def test_bars_count_what_they_are_told_and_stay_when_not_transient():
    console, buf = _console()
    with Bars(transient=False, console=console) as bars:
        advance = bars.add("reading [bold]x[/]", 10)  # shown as written, not eaten as markup
        in_batches(lambda b: b, np.zeros(10), 4, progress=advance)
        done = bars.progress.tasks[0].completed
    assert done == 10
    text = buf.getvalue()
    assert "reading [bold]x[/]" in text and "10/10" in text


def test_bars_draw_nothing_when_quiet_or_transient_off_a_terminal():
    for kwargs in ({"quiet": True, "transient": False}, {}):
        console, buf = _console()
        with Bars(console=console, **kwargs) as bars:
            bars.add("classifying", 3)(3)
        assert buf.getvalue().strip() == ""  # (rich ends a transient display off a terminal with a bare newline)


def test_progress_goes_to_stderr_never_stdout(capsys):
    with progress_bar("reading images", 2, transient=False) as advance:
        advance(1)
        advance()
        advance.describe("read")
    out, err = capsys.readouterr()
    assert out == ""
    assert "read" in err and "2/2" in err
