"""Progress output: a bar on a terminal, plain lines every N steps in a log file (issue 24).

A stage whose output goes to a file must write no carriage-return bar updates, and still say how far
it is; on a terminal it shows tqdm's bar. The libraries' bars (transformers' "Loading weights",
"Writing model shards") are off in a log too.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

from tqdm import tqdm

from test_latency_predictor import write_table
from pretraining_fixtures import write_corpus, write_vocab
from utils.progress import PlainProgress, format_duration, progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_n_steps_and_at_the_end():
    out = io.StringIO()
    seen = []
    for item in progress(range(25), desc="predictor (v2)", unit="step", every=10, file=out):
        seen.append(item)
    assert seen == list(range(25))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert lines[0].startswith("predictor (v2): 10/25 step (40 %), ") and "left" in lines[0]
    assert lines[1].startswith("predictor (v2): 20/25 step (80 %), ")
    assert lines[2].startswith("predictor (v2): 25/25 step (100 %), ") and "left" not in lines[2]


def test_plain_default_period_is_a_tenth_and_postfix_is_shown():
    out = io.StringIO()
    bar = progress(total=1000, desc="tokenising", unit="B", unit_scale=True, file=out)
    assert isinstance(bar, PlainProgress) and bar.every == 100
    for _ in range(40):
        bar.update(25)  # 1000 in 40 updates: a line at every crossing of 100
        bar.set_postfix_str("loss 1.0")
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("tokenising: 1.0k/1.0k B (100 %)")
    assert lines[0].startswith("tokenising: 100/1.0k B (10 %)") and lines[0].endswith(", loss 1.0")


def test_silent_and_resumed_bars():
    out = io.StringIO()
    with progress(total=10, desc="x", enabled=False, file=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    # a resumed run (initial=4): the next line is at the next multiple, the estimate counts only this run
    with progress(total=10, initial=4, desc="rounds", unit="round", every=5, file=out) as bar:
        bar.update(1)
        bar.update(1)
    first, last = out.getvalue().splitlines()
    assert first.startswith("rounds: 5/10 round (50 %)") and last.startswith("rounds: 6/10 round (60 %)")
    out2 = io.StringIO()
    with progress(total=3, desc="only the end", every=0, file=out2) as bar:
        bar.update(3)
    assert len(out2.getvalue().splitlines()) == 1


def test_a_terminal_gets_tqdm():
    bar = progress(total=5, desc="x", file=FakeTerminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert format_duration(59) == "59s" and format_duration(61) == "1m01s" and format_duration(3700) == "1h01m40s"


def _run_logged(argv, log_path, cwd=ROOT):
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, *argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=300)
    text = open(log_path, encoding="utf-8").read()
    assert done.returncode == 0, text
    return text


def test_predictor_log_written_to_a_file_has_plain_progress_lines(tmp_path):
    """The issue's case: the predictor's log held hundreds of bar updates on one line."""
    table = write_table(tmp_path / "lat.jsonl")
    text = _run_logged(["latency_predictor.py", "--lat_dataset_path", table, "--ckpt_path",
                        str(tmp_path / "p.pt"), "--max_steps", "200", "--no_plot"], tmp_path / "predictor.log")
    assert "\r" not in text and "\x1b[" not in text
    lines = [line for line in text.splitlines() if line.startswith("predictor (v2): ")]
    assert 2 <= len(lines) <= 11, text  # every 20 steps and at the end (early stopping may end it sooner)
    assert lines[0].startswith("predictor (v2): 20/200 step (10 %)") and "val MAPD" in text


def test_generate_data_log_written_to_a_file(tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    write_vocab(vocab)
    write_corpus(str(tmp_path / "raw"))
    text = _run_logged(["generate_data.py", "--train_corpus", str(tmp_path / "raw"), "--bert_model", vocab,
                        "--output_dir", str(tmp_path / "shards"), "--max_seq_len", "32", "--num_shards", "2"],
                       tmp_path / "data.log")
    assert "\r" not in text
    assert any(line.startswith("tokenising: ") and "(100 %)" in line for line in text.splitlines()), text


def test_library_bars_are_off_in_a_log_and_on_at_a_terminal(tmp_path):
    code = ("import sys, transformers\n"
            "from transformers.utils import logging as hf_logging\n"
            "from utils import run_cli\n"
            "run_cli(lambda argv: print('bars', hf_logging.is_progress_bar_enabled()))\n")
    text = _run_logged(["-c", code], tmp_path / "lib.log")
    assert "bars False" in text
    # on a terminal (a pseudo-terminal as stderr) the bars stay as the user set them
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=follower,
                              stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": ""})
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 0 and "bars True" in done.stdout.decode()
