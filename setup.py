#!/usr/bin/env python
"""retina_focal: focal loss and its descendants as swappable, measurable parts of Detectron2.

torch, torchvision and detectron2 are installed by ``scripts/setup.sh`` (detectron2 is not on
PyPI under its own name); this file lists the remaining runtime dependencies.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    with open(os.path.join(HERE, "retina_focal", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError("retina_focal/__init__.py has no __version__")
    return match.group(1)


setup(
    name="retina_focal",
    version=read_version(),
    description="Focal Loss (Lin et al., ICCV 2017) and its descendants as a Detectron2 plugin",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # the shipped configs (configs/) go into the package as retina_focal/configs, where
    # retina_focal.config.get_config_file finds them by name (retina_focal/config/zoo.py)
    packages=find_packages(include=("retina_focal", "retina_focal.*")) + ["retina_focal.configs"],
    package_dir={"retina_focal.configs": "configs"},
    package_data={
        # the fused focal-loss kernel's source: compiled on first use (ops/_cpu_kernel.py)
        "retina_focal.ops": ["csrc/*.cpp"],
        "retina_focal.configs": ["*.yaml", "*/*.yaml", "*/*.py", "*/*/*.py"],
    },
    install_requires=[
        "torch>=1.10",
        "torchvision",
        "numpy",
        # detectron2's runtime dependencies (its PyPI sdist pins outdated tools: see setup.sh)
        "fvcore==0.1.5.post20221221",
        "iopath==0.1.9",
        "pycocotools>=2.0.6",
        "yacs>=0.1.8",
        "termcolor>=1.1",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "matplotlib",
        "opencv-python-headless",
        "Pillow>=9",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout", "flake8>=6", "isort>=5.12", "import-linter>=2",
                 "mypy>=1.8"],
        # `retina-focal export --format onnx` and its onnxruntime runtime (retina_focal/export/);
        # no onnxscript: the TorchScript-based exporter is used (retina_focal/export/onnx.py)
        "deploy": ["onnx>=1.15", "onnxruntime>=1.17"],
    },
    # `retina-focal COMMAND ...` (train, eval, demo, ablate, benchmark, ...: `retina-focal --help`)
    # runs in-process from the installed package (retina_focal/cli/); tools/*.py wrap the same
    entry_points={"console_scripts": ["retina-focal=retina_focal.cli:main"]},
)
