"""The configs that ship with retina_focal, found by name from anywhere (as Detectron2's
``model_zoo.get_config_file``): a wheel carries them inside the package
(``retina_focal/configs``), a source checkout has them beside it (``configs/``).

    from retina_focal.config import get_config_file
    cfg.merge_from_file(get_config_file("COCO-Detection/retina_focal_R_50_FPN_1x.yaml"))

Every command's ``--config-file`` takes a path, or, where no such file exists, the name of a
shipped config, with or without the leading ``configs/``: the README's
``--config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml`` then works from any
directory of a machine that only has the wheel. A path that exists always wins; the file used
instead is logged.
"""
import difflib
import logging
import os
from typing import List

from retina_focal.config.loading import ConfigError, ConfigFileNotFound

__all__ = ["config_name", "config_root", "get_config_file", "list_configs", "resolve_config_file"]

logger = logging.getLogger(__name__)

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../retina_focal
_CANDIDATES = (os.path.join(_PACKAGE, "configs"),  # an installed wheel
               os.path.join(os.path.dirname(_PACKAGE), "configs"))  # a source checkout
_SUFFIXES = (".yaml", ".yml", ".py")


def config_root() -> str:
    """The folder of the shipped configs (the package's in a wheel, else the checkout's)."""
    for root in _CANDIDATES:
        if os.path.isdir(os.path.join(root, "Synthetic")):
            return root
    raise ConfigFileNotFound("retina_focal's configs are not installed: neither "
                             f"{' nor '.join(_CANDIDATES)} exists (reinstall the package)")


def list_configs() -> List[str]:
    """Names of the shipped configs (``Synthetic/retina_focal_R_18_FPN_tiny.yaml``, ...),
    without the shared pieces under ``common/``."""
    root = config_root()
    names = []
    for folder, _, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        if rel.split(os.sep)[0] == "common":
            continue
        names += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                  for f in files if f.endswith(_SUFFIXES)]
    return sorted(names)


def _name(name: str) -> str:
    name = name.replace(os.sep, "/")
    return name[len("configs/"):] if name.startswith("configs/") else name


def get_config_file(name: str) -> str:
    """The path of the shipped config ``name`` (relative to the configs folder, e.g.
    ``Synthetic/retina_focal_R_18_FPN_tiny.yaml``; a leading ``configs/`` is allowed).

    Raises:
        ConfigFileNotFound: no such config; the message lists the closest names.
    """
    path = os.path.join(config_root(), *_name(name).split("/"))
    if os.path.isfile(path):
        return path
    names = list_configs()
    close = difflib.get_close_matches(_name(name), names, n=3, cutoff=0.5)
    raise ConfigFileNotFound(
        f"config {name!r} is not one of retina_focal's configs"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + f" ({len(names)} shipped: retina_focal.config.list_configs())")


def resolve_config_file(path: str) -> str:
    """``path`` if that file exists; else the shipped config of that name (logged); else
    :class:`ConfigFileNotFound` naming ``path`` and the closest shipped names."""
    if not path:
        raise ConfigFileNotFound("no config file given (--config-file)")
    if os.path.isdir(path):
        raise ConfigError(f"config file {path!r} is a folder; give a .yaml or .py file in it")
    if os.path.isfile(path) or "://" in path or os.path.isabs(path):
        if not os.path.isfile(path) and "://" not in path:
            raise ConfigFileNotFound(f"config file {path!r} does not exist")
        return path
    try:
        found = get_config_file(path)
    except ConfigFileNotFound as e:
        raise ConfigFileNotFound(f"config file {path!r} does not exist here, and {e}") from None
    logger.info(f"{path}: not in {os.getcwd()}; using the shipped config {found}")
    return found


def config_name(path: str) -> str:
    """How a report names the config ``path``: its shipped name
    (``Synthetic/retina_focal_R_18_FPN_tiny.yaml``, which ``--config-file`` takes anywhere) if
    it is one of the shipped configs, else its absolute path."""
    path = os.path.abspath(path)
    root = config_root()
    if os.path.commonpath([path, root]) == root:
        return os.path.relpath(path, root).replace(os.sep, "/")
    return path
