#!/usr/bin/env python
"""Install detectron2 0.6 from the package registry into the running Python environment.

Run it as a file, by path (it imports nothing of retina_focal, which needs detectron2 to
import): ``scripts/setup.sh`` does so in the source tree; with only the wheel installed,
docs/install.md ("The wheel, without the source tree") gives the command that finds it in the
installed package.

The official detectron2 is not on PyPI. PyPI's ``pb1-detectron2==0.6`` is an sdist of
detectron2 v0.6's Python sources without the C++/CUDA sources of ``detectron2._C``, so a
plain ``pip install pb1-detectron2`` fails while building. RetinaNet needs no compiled op
(NMS comes from torchvision), so this script installs the Python package with three small,
checked adjustments made to the unpacked sdist in a temporary directory:

1. ``setup.py``: no extension module is built.
2. ``detectron2/_C.py``: a stand-in for the missing extension. Importing it works (several
   modules import it at import time); *using* any of its functions raises an
   ``AttributeError`` naming the function and explaining why, so an op that needs the
   compiled code (deformable conv, rotated boxes, the fast COCO evaluator) fails loudly.
   ``retina_focal.utils.compat`` detects it and uses the pure-Python COCO evaluator.
3. ``detectron2/data/transforms/transform.py``: the ``PIL.Image.LINEAR`` default argument,
   removed in Pillow 10, becomes ``PIL.Image.BILINEAR`` (the same value in older Pillow).
4. ``detectron2/export/__init__.py``: the Caffe2 exporter is imported only if caffe2 exists,
   so Detectron2's TorchScript deployment path (``TracingAdapter``) imports.
5. ``setup.py``: development-only pins (black, caffe2 extras) leave ``install_requires``.

Every adjustment asserts that the text it replaces is there exactly as expected, so a
changed sdist stops the install with a message instead of producing a half-working package.
The sdist's sha256 is pinned. Nothing is downloaded except from the package index pip uses.
"""
import os
import sys

# Run as a file, Python puts this file's folder (retina_focal/utils/) first on sys.path, where
# its siblings (errors.py, compat.py, ...) would shadow top-level modules of those names for
# every import below (torch's included): take it off.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == \
        os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import hashlib  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402

PACKAGE = "pb1-detectron2"
VERSION = "0.6"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

C_STUB = '''"""Stand-in for detectron2's compiled extension, written by retina_focal's setup.

This detectron2 was installed from PyPI's pb1-detectron2 0.6 sdist, which ships no C++/CUDA
sources. Functions of the compiled extension are therefore unavailable; RetinaNet and
retina_focal do not need them.
"""

RETINA_FOCAL_STUB = True


# Reported by detectron2.utils.collect_env (printed at the start of every training run).
def get_compiler_version():
    return "none: compiled extension not built (pb1-detectron2 0.6, Python sources only)"


def get_cuda_version():
    return "none: compiled extension not built"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"detectron2._C.{name} is unavailable: this detectron2 (PyPI pb1-detectron2 0.6) was "
        "installed without its compiled C++/CUDA extension. Ops that need it (deformable "
        "convolution, rotated boxes, ROIAlignRotated, the fast COCO evaluator) cannot run; "
        "install the official detectron2 built from source to use them."
    )
'''

# (relative path, old text, new text, expected number of occurrences)
EDITS = [
    ("setup.py", "ext_modules=get_extensions(),", "ext_modules=[],", 1),
    # Pinned tools of detectron2's own development (black), and caffe2-export-only packages,
    # are not runtime dependencies; dropping them keeps pip's resolver from reporting conflicts.
    ("setup.py", '"black==21.4b2",', "", 1),
    ("setup.py", '"future",  # used by caffe2', "", 1),
    ("setup.py", '"pydot",  # used to save caffe2 SVGs', "", 1),
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR,",
        "interp=Image.BILINEAR,",
        1,
    ),
    # detectron2.export imports its Caffe2 exporter unconditionally; caffe2 is not on PyPI, so
    # TracingAdapter and the TorchScript helpers could not be imported. Only a missing caffe2
    # is tolerated; any other import error still propagates.
    (
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n"
        "    from .api import *  # Caffe2 export: needs the caffe2 package\n"
        "except ModuleNotFoundError as _e:\n"
        "    if not (_e.name or \"\").startswith(\"caffe2\"):\n"
        "        raise\n",
        1,
    ),
]


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def apply_edit(root: str, rel: str, old: str, new: str, count: int) -> None:
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = text.count(old)
    if found != count:
        raise SystemExit(
            f"[install_detectron2] {rel}: expected {count} occurrence(s) of {old!r}, found "
            f"{found}. The {PACKAGE} {VERSION} sdist is not the one this script was written "
            "for; refusing to install a package patched blindly."
        )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


def main() -> None:
    import torch  # noqa: F401  (the sdist's setup.py imports torch: fail early and clearly)

    with tempfile.TemporaryDirectory(prefix="d2-sdist-") as tmp:
        # --no-build-isolation: the sdist's setup.py imports torch even to report metadata.
        pip(
            "download", f"{PACKAGE}=={VERSION}", "--no-deps", "--no-binary", ":all:",
            "--no-build-isolation", "--quiet", "-d", tmp,
        )
        archives = [n for n in os.listdir(tmp) if n.endswith((".tar.gz", ".zip"))]
        if len(archives) != 1:
            raise SystemExit(f"[install_detectron2] expected one sdist in {tmp}, got {archives}")
        archive = os.path.join(tmp, archives[0])
        digest = sha256_of(archive)
        if digest != SHA256:
            raise SystemExit(
                f"[install_detectron2] sha256 of {archives[0]} is {digest}, expected {SHA256}"
            )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{PACKAGE}-{VERSION}")
        for rel, old, new, count in EDITS:
            apply_edit(src, rel, old, new, count)
        stub = os.path.join(src, "detectron2", "_C.py")
        if os.path.exists(stub):
            raise SystemExit(f"[install_detectron2] {stub} already exists in the sdist")
        with open(stub, "w", encoding="utf-8") as f:
            f.write(C_STUB)
        # --no-deps: the sdist pins black==21.4b2 and old fvcore/iopath ranges; retina_focal's
        # setup.py lists the runtime dependencies detectron2 needs.
        pip("install", "--no-deps", "--no-build-isolation", "--quiet", src)
    log(f"installed {PACKAGE} {VERSION} (Python sources only)")


if __name__ == "__main__":
    main()
