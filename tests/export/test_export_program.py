"""torch.export of the model cut at its head (retina_focal.export.exported_program), saved as
.pt2 and run with torch.export.load(...).module() behind the eager interface: dynamic sizes,
the eager model's detections, the class map in the archive, the size bound's error."""
import json

import pytest
import torch
from conftest import TINY_CONFIG

from retina_focal.engine.defaults import build_cfg, build_model
from retina_focal.export.exported_program import CLASS_MAP_FILE
from retina_focal.export.files import export_file
from retina_focal.export.parity import compare_instances
from retina_focal.export.runtime import ExportedModelError, load_exported

SIZES = [(160, 160), (170, 230), (256, 192)]  # padded sides above P7's stride (128)
CLASS_MAP = [{"id": k + 1, "name": n} for k, n in enumerate("abcdef")]


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    # a test size the program can take (the tiny config's 128 pads to 128 < 160)
    cfg = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
                                  "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    out = str(tmp_path_factory.mktemp("pt2"))
    path = export_file(cfg, model, _image(128, 128, 0).float(), "exported-program", out,
                       CLASS_MAP)
    return cfg, model, path


@pytest.mark.parametrize("size", SIZES)
def test_exported_program_gives_eager_detections_at_three_sizes(program, size):
    cfg, model, path = program
    exported = load_exported(cfg, path)
    assert exported.class_map == CLASS_MAP
    inputs = [{"image": _image(*size, seed=sum(size))}]
    with torch.no_grad():
        diff = compare_instances(model(inputs)[0]["instances"],
                                 exported.model(inputs)[0]["instances"])
    assert diff["same"] and diff["detections"][0] > 50, diff


def test_exported_program_archive_and_errors(program, tmp_path):
    cfg, model, path = program
    extra = {CLASS_MAP_FILE: ""}
    torch.export.load(path, extra_files=extra)
    assert json.loads(extra[CLASS_MAP_FILE]) == CLASS_MAP
    exported = load_exported(cfg, path).model
    with pytest.raises(ExportedModelError,
                       match=r"at least 160 pixels a side .* this one is 128x128"):
        exported([{"image": _image(128, 128, 0)}])
    # a config whose every test image is too small: refused when loaded (one line in the CLI)
    tiny = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    with pytest.raises(ExportedModelError, match=r"INPUT.MIN_SIZE_TEST 128 \(MAX_SIZE_TEST "
                       r"128\) gives 128: use --format onnx"):
        load_exported(tiny, path)
    bad = tmp_path / "model.pt2"
    bad.write_bytes(b"not a program")
    with pytest.raises(ExportedModelError, match="cannot read the exported program .*model.pt2"):
        load_exported(cfg, str(bad))


def test_export_refuses_a_program_its_config_cannot_run(trained, tmp_path, capsys):
    """A stranger's finding: at the tiny config's test size (128) the program was written,
    then every evaluation died with a traceback. Now refused before anything is written."""
    from retina_focal.cli import main

    out = tmp_path / "pt2"
    assert main(["export", "--format", "exported-program", "--config-file", TINY_CONFIG,
                 "--output", str(out), "MODEL.WEIGHTS", trained["weights"]]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --format exported-program: the exported program takes "
                          "padded images of at least 160 pixels"), err
    assert "use --format onnx" in err and not out.exists()


def test_a_check_that_compared_nothing_says_so(tmp_path, monkeypatch):
    """A stranger's find: a randomly initialised model's export logged "0 detections ...;
    equal to eager model: True", a check of nothing, without a word. (The log is read with a
    handler of the test's own: Detectron2's setup_logger keeps the stream of its first call.)"""
    import io
    import logging

    from retina_focal import cli
    from retina_focal.export.checked import LOGGER_NAME, warn_if_nothing_compared

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.chdir(tmp_path)
    try:
        assert cli.main(["export", "--config-file", TINY_CONFIG, "--output", "ts"]) == 0
        assert "0 detections on the sample image; equal to eager model: True" in log.getvalue()
        assert "The sample image gave no detection, so the check above compared no box" in (
            log.getvalue())
        log.truncate(0)
        warn_if_nothing_compared(3, None)
        assert "no detection" not in log.getvalue()
    finally:
        logger.removeHandler(handler)
