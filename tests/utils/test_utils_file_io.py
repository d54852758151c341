"""retina_focal.utils.file_io: the one atomic write, and retina_focal.utils.plotting."""
import errno
import io
import json
import os
import stat

import pytest
import torch

from retina_focal.utils import file_io
from retina_focal.utils.file_io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_temporary_file,
    temporary_path,
)
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


def test_temporary_files_are_named_so_a_later_run_finds_exactly_them(tmp_path):
    seen = []
    atomic_write_bytes(str(tmp_path / "model.pth"), lambda f: seen.append(f.name))
    assert seen == [temporary_path(str(tmp_path / "model.pth"))]
    name = os.path.basename(seen[0])
    assert is_temporary_file(name) and name.startswith(".model.pth.")
    for other in ("model.pth", ".model.pth", "model.pth.tmp", ".model.pth.1.tmp",
                  ".model.pth.a.2.tmp", name + ".bak"):
        assert not is_temporary_file(other), other


class _FullDisk(io.RawIOBase):
    """A file on a file system that has room for ``room`` more bytes."""

    def __init__(self, path, room):
        self._file, self._room = open(path, "wb"), room
        self.name = path

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def close(self):
        self._file.close()
        super().close()


def test_a_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_old_one(tmp_path,
                                                                             monkeypatch):
    from retina_focal.engine.checkpoint import RetinaFocalCheckpointer

    model = torch.nn.Linear(64, 64)
    ckpt = RetinaFocalCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001", iteration=1)
    before = sorted(os.listdir(tmp_path))
    # the disk fills up during the next save: torch.save's writer ends with its own error
    # (inline_container.cc) unless atomic_write reports the cause
    monkeypatch.setattr(file_io, "open", lambda path, mode, **kw: io.BufferedWriter(
        _FullDisk(path, room=1000)), raising=False)
    path = os.path.join(str(tmp_path), "model_0000002.pth")
    with pytest.raises(OSError) as info:
        ckpt.save("model_0000002", iteration=2)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno {errno.ENOSPC}] No space left on device: could not write {path} (its previous "
        "content, if any, is intact); free space on that file system or write elsewhere")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no partial file, no temporary
    assert open(tmp_path / "last_checkpoint").read() == "model_0000001.pth"
    loaded = RetinaFocalCheckpointer(torch.nn.Linear(64, 64), str(tmp_path))
    assert loaded.resume_or_load("", resume=True)["iteration"] == 1


def test_other_write_errors_stay_as_they_are(tmp_path):
    def fail(f):
        raise OSError(errno.EACCES, "denied")

    with pytest.raises(PermissionError, match="denied"):
        atomic_write_bytes(str(tmp_path / "x"), fail)


def test_pyplot_draws_without_a_display(tmp_path):
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    assert (tmp_path / "p.png").stat().st_size > 0


def test_output_dir_of_run_removes_only_the_folders_it_created_when_the_run_fails(tmp_path):
    from retina_focal.utils.file_io import output_dir_of_run

    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(SystemExit):
        with output_dir_of_run(str(target)):
            assert target.is_dir()
            raise SystemExit("error: refused")
    assert not (tmp_path / "new").exists()  # the run created new/deeper/out: all gone
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ValueError):
        with output_dir_of_run(str(kept / "sub")):
            raise ValueError("bad input")
    assert kept.is_dir() and not (kept / "sub").exists()  # an existing folder stays
    with output_dir_of_run(str(tmp_path / "ok")):
        (tmp_path / "ok" / "f.txt").write_text("x")
    assert (tmp_path / "ok" / "f.txt").exists()  # a run that succeeds keeps its output


def test_output_checks_refuse_a_file_in_the_way_and_create_nothing(tmp_path, monkeypatch):
    """A stranger's find: commands learnt that their output folder was a file (or below one)
    only after their work, from a FileExistsError traceback. The checks see it first, and
    write nothing."""
    from retina_focal.utils.errors import DataError
    from retina_focal.utils.file_io import check_output_dir, check_output_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"--output 'afile' is a file; give a folder"):
        check_output_dir("afile")
    with pytest.raises(DataError, match=r"--out 'afile/sub/deeper': cannot create this folder "
                                        r"\('afile' is a file, not a folder\)"):
        check_output_dir("afile/sub/deeper", "--out")
    with pytest.raises(DataError, match=r"--output 'afile/x.json': its folder cannot be made "
                                        r"\('afile' is a file, not a folder\)"):
        check_output_file("afile/x.json")
    with pytest.raises(DataError, match=r"--output 'folder' is a folder; give the file"):
        check_output_file("folder")
    assert check_output_dir("new/deeper") == "new/deeper"
    assert check_output_file("new/x.json") == "new/x.json"
    assert check_output_file("x.json") == "x.json"
    assert check_output_dir(str(tmp_path / "folder")) == str(tmp_path / "folder")
    assert sorted(os.listdir(tmp_path)) == ["afile", "folder"]  # nothing was created
    # a folder without write permission (root may write anywhere: not checkable as root)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(DataError, match="is not writable"):
                check_output_file(str(locked / "sub" / "x.json"))
        finally:
            locked.chmod(stat.S_IRWXU)
