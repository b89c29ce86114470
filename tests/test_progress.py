"""Progress in a log: whole lines at each 10 % (never carriage-return frames); silent when off."""

from __future__ import annotations

import pytest

from zsbench.progress import LineProgress, lightning_progress, progress


def test_lines_at_each_tenth_and_no_carriage_returns(capsys):
    for _ in LineProgress(range(20), desc="extracting", unit="batch"):
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert len(lines) == 10
    assert lines[0].startswith("extracting: 2/20 batch (10%)")
    assert lines[-1].startswith("extracting: 20/20 batch (100%)")


def test_time_interval_prints_without_a_total_and_postfix(capsys):
    bar = LineProgress(desc="sweep", unit="cell", interval_s=0.0)
    bar.set_postfix(failed=1)  # the tqdm calls zsbench makes work on every kind of bar
    bar.update(3)
    bar.close()
    line = capsys.readouterr().err
    assert line.startswith("sweep: 3 cell,") and line.rstrip().endswith("failed=1")
    for bar in (progress(total=2, enabled=False), progress(total=2)):
        bar.set_postfix(failed=0)
        bar.write("a note")
        bar.update(2)
        bar.close()


def test_disabled_progress_is_silent_and_log_gets_lines(capsys):
    assert list(progress(range(5), desc="x", enabled=False)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    bar = progress(total=4, desc="y", unit="img")  # pytest captures stderr: not a TTY
    assert isinstance(bar, LineProgress)
    with bar:
        bar.update(4)
    assert "y: 4/4 img (100%)" in capsys.readouterr().err


@pytest.mark.parametrize("enabled", [True, False])
def test_lightning_gets_line_callback_in_a_log(enabled):
    bar, callbacks = lightning_progress(enabled)
    assert bar is False  # never a carriage-return bar outside a TTY
    assert len(callbacks) == (1 if enabled else 0)


def test_slow_work_reads_as_seconds_per_item():
    """`0.00 batch/s` said nothing about a 421 s batch: below one a second the rate flips."""
    from zsbench.progress import format_rate

    assert format_rate(12.345, "batch") == "12.35 batch/s"
    assert format_rate(1 / 42, "batch") == "42.0 s/batch"
    assert format_rate(1 / 421, "batch") == "421 s/batch"
    assert format_rate(0.0, "cell") == "- s/cell"
