"""Issue 28 (10): the configs ship with the package and are found by name from anywhere
(retina_focal.config.zoo, like detectron2.model_zoo.get_config_file); every command's
--config-file takes a shipped name where no such file exists. The wheel's own run outside the
tree is scripts/wheel_quickstart.sh (in CI)."""
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import CONFIGS, REPO

from retina_focal.config import get_config_file, list_configs
from retina_focal.config.loading import ConfigError, ConfigFileNotFound
from retina_focal.config.zoo import resolve_config_file
from retina_focal.engine.defaults import build_cfg


def test_every_config_is_listed_and_found_by_name_with_or_without_configs_prefix():
    names = list_configs()
    on_disk = sorted(os.path.relpath(os.path.join(d, f), CONFIGS).replace(os.sep, "/")
                     for d, _, files in os.walk(CONFIGS) for f in files
                     if not os.path.relpath(d, CONFIGS).startswith("common"))
    assert names == on_disk and "Synthetic/retina_focal_R_18_FPN_tiny.yaml" in names
    for name in names:
        path = get_config_file(name)
        assert os.path.samefile(path, os.path.join(CONFIGS, name))
        assert get_config_file("configs/" + name) == path


def test_an_unknown_name_lists_the_closest_and_a_local_file_wins(tmp_path, monkeypatch):
    with pytest.raises(ConfigFileNotFound, match=r"'Synthetic/retina_focal_R18_tiny\.yaml' is "
                                                 r"not one of retina_focal's configs; did you "
                                                 r"mean Synthetic/retina_focal_R_18_FPN_tiny"):
        get_config_file("Synthetic/retina_focal_R18_tiny.yaml")
    monkeypatch.chdir(tmp_path)
    # no such file here: the shipped one
    name = "configs/Synthetic/retina_focal_R_18_FPN_tiny.yaml"
    assert os.path.samefile(resolve_config_file(name), os.path.join(REPO, name))
    cfg = build_cfg("Synthetic/retina_focal_R_18_FPN_tiny.yaml")
    assert cfg.DATASETS.TRAIN == ("synthetic_shapes_tiny_train",)
    # a file of that name here: that one, never the shipped one
    local = tmp_path / name
    local.parent.mkdir(parents=True)
    local.write_text("MODEL:\n  DEVICE: cpu\n")
    assert resolve_config_file(name) == name
    with pytest.raises(ConfigFileNotFound, match=r"'mine\.yaml' does not exist here"):
        resolve_config_file("mine.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        resolve_config_file("configs")


def test_the_wheel_carries_every_config(tmp_path):
    """setup.py's package_data globs cover every file of configs/ (a new folder depth would
    silently be left out of the wheel)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    wheel = next(p for p in tmp_path.iterdir() if p.suffix == ".whl")
    shipped = sorted(n[len("retina_focal/configs/"):] for n in zipfile.ZipFile(wheel).namelist()
                     if n.startswith("retina_focal/configs/"))
    on_disk = sorted(os.path.relpath(os.path.join(d, f), CONFIGS).replace(os.sep, "/")
                     for d, _, files in os.walk(CONFIGS) for f in files)
    assert shipped == on_disk


def test_benchmark_and_ablate_find_configs_by_name_from_another_folder(tmp_path, monkeypatch):
    """A stranger's find: from a wheel, benchmark's default config pointed into site-packages
    beside the package, and ablate refused a shipped config's name."""
    from retina_focal.cli import ablate, benchmark

    monkeypatch.chdir(tmp_path)
    for argv in (["--only", "loss", "--quick"], ["--only", "loss"]):
        assert os.path.isfile(benchmark.parse_args(argv).config_file)
    args = ablate.build_parser().parse_args([
        "--config-file", "configs/Synthetic/retina_focal_R_18_FPN_tiny.yaml", "--study", "1a",
        "--schedule", "tiny", "--settings", "alpha=0.75", "--output", str(tmp_path / "ab")])
    assert os.path.isfile(ablate.plan_from_args(args)["config_file"])


def test_config_name_is_the_shipped_name_or_the_absolute_path(tmp_path, monkeypatch):
    """What a report records: a name ``--config-file`` takes anywhere."""
    from retina_focal.config.zoo import config_name, get_config_file, resolve_config_file

    shipped = get_config_file("Synthetic/retina_focal_R_18_FPN_tiny.yaml")
    assert config_name(shipped) == "Synthetic/retina_focal_R_18_FPN_tiny.yaml"
    assert resolve_config_file(config_name(shipped)) == shipped
    mine = tmp_path / "mine.yaml"
    mine.write_text("_BASE_: x\n")
    monkeypatch.chdir(tmp_path)
    assert config_name("mine.yaml") == str(mine)
