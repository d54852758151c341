"""retina_focal.utils.file_io: the one atomic write, and retina_focal.utils.plotting."""
import json
import os
import stat

import pytest

from retina_focal.utils.file_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from retina_focal.utils.plotting import pyplot


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "f.json")
    atomic_write_json(path, {"a": 1})

    def half_then_fail(f):
        f.write(b'{"a": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write_bytes(path, half_then_fail, durable=True)
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


def test_writes_replace_the_file_with_ordinary_permissions(tmp_path):
    path = str(tmp_path / "f.txt")
    atomic_write_text(path, "old")
    atomic_write_bytes(path, b"new", durable=True)
    assert open(path).read() == "new" and os.listdir(tmp_path) == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # not a private temp file's


def test_pyplot_draws_without_a_display(tmp_path):
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    assert (tmp_path / "p.png").stat().st_size > 0
