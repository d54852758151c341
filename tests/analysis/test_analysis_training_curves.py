"""retina_focal.analysis.training_curves (``retina-focal plot``): metrics.json of a run killed
while writing it is read up to its last complete line; a malformed line elsewhere is an error
naming the file and the line."""
import json
import logging
import os

import pytest

from retina_focal import cli
from retina_focal.analysis.training_curves import load_metrics

ROWS = [{"iteration": i, "total_loss": 1.0 / (i + 1), "lr": 0.01} for i in range(3)]


def write_metrics(folder, text):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        f.write(text)
    return path


def complete_lines():
    return "".join(json.dumps(r) + "\n" for r in ROWS)


def test_a_cut_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = write_metrics(str(tmp_path), complete_lines() + '{"iteration": 3, "total_lo')
    with caplog.at_level(logging.WARNING, logger="retina_focal"):
        metrics = load_metrics(path)
    assert metrics["total_loss"] == [(r["iteration"], r["total_loss"]) for r in ROWS]
    assert (f"{path}:4: the last line is cut short (the run was killed while writing it?): "
            "skipped it, read the 3 lines before it") in caplog.text


def test_a_malformed_line_elsewhere_is_an_error_naming_it(tmp_path):
    lines = complete_lines().splitlines(keepends=True)
    # in the middle
    path = write_metrics(str(tmp_path / "middle"), lines[0] + '{"iteration": 1,\n' + lines[2])
    with pytest.raises(ValueError, match=rf"^{path}:2 is not a JSON line"):
        load_metrics(path)
    # last, but complete (it ends its line): not a cut write
    path = write_metrics(str(tmp_path / "last"), complete_lines() + "not json\n")
    with pytest.raises(ValueError, match=rf"^{path}:4 is not a JSON line"):
        load_metrics(path)
    # nothing but a cut line: no metrics
    path = write_metrics(str(tmp_path / "cut_only"), '{"iteration": 0, "to')
    with pytest.raises(ValueError, match=rf"^{path} holds no metrics"):
        load_metrics(path)


def test_plot_command_draws_a_killed_run(tmp_path, capsys):
    run = str(tmp_path / "run")
    write_metrics(run, complete_lines() + '{"iteration": 3, "lr": 0.0')
    assert cli.main(["plot", run, "--output", str(tmp_path / "plots")]) == 0
    summary = json.load(open(tmp_path / "plots" / "summary.json"))
    assert summary["run"]["last_iteration"] == 2
    assert cli.main(["plot", write_metrics(str(tmp_path / "bad"), "x\n" + complete_lines())]) == 1
    assert "metrics.json:1 is not a JSON line" in capsys.readouterr().err
