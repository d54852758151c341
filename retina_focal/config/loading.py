"""Config files loaded without running code.

A YAML file read with PyYAML's full loader can run any Python function: a value tagged
``!!python/object/apply:os.system ["..."]`` calls it while the file is parsed. Detectron2's
``CfgNode.merge_from_file`` tries ``yaml.safe_load`` first and, when it fails, falls back to
``yaml.unsafe_load`` with only a warning, so by default a config someone sends you runs their
code. retina_focal reads every YAML config (and each ``_BASE_`` file it names, recursively)
with ``yaml.safe_load`` before Detectron2 merges it, and merges with ``allow_unsafe=False``;
a Python tag is a :class:`UnsafeConfigError` naming the file, the line and the tag.

Loading such a file anyway needs an explicit opt-in (``--allow-unsafe-config`` on the command
line, ``allow_unsafe=True`` in :func:`merge_yaml_config`), because it runs the code. Detectron2's
own model-zoo YAML (``Base-RetinaNet.yaml``) writes ``ANCHOR_GENERATOR.SIZES`` with
``!!python/object/apply:eval``: such a config needs the flag, or the list written out in plain
YAML as ``configs/Base-RetinaFocal.yaml`` does. No tag is allowed by pattern, because allowing
one means evaluating it.

A LazyConfig ``.py`` file is a Python program by design (it is imported to be read), so it
runs code like any script you run; a LazyConfig ``.yaml`` file (what ``LazyConfig.save``
writes) gets the same safe check as a YAML config (:func:`check_lazy_config`).
"""
import argparse
import logging
import os
import re
from typing import Any, List, Optional

import yaml
from detectron2.utils.file_io import PathManager

from retina_focal.utils.errors import UserError

__all__ = [
    "ALLOW_UNSAFE_FLAG",
    "UnsafeConfigError",
    "add_allow_unsafe_config_argument",
    "check_lazy_config",
    "load_lazy_config",
    "ConfigError",
    "ConfigFileNotFound",
    "check_config_kind",
    "check_yaml_config",
    "merge_config_overrides",
    "merge_yaml_config",
    "unknown_key_error",
]

logger = logging.getLogger(__name__)

# The command-line option every tool that reads a YAML config spells the opt-in with.
ALLOW_UNSAFE_FLAG = "--allow-unsafe-config"

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
_REMOTE_PREFIXES = ("/", "https://", "http://")  # _BASE_ paths fvcore does not join


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the file or key and
    the fix. The commands print it as one ``error:`` line, without a traceback."""


class ConfigFileNotFound(ConfigError, FileNotFoundError):
    """A config file that does not exist."""


class UnsafeConfigError(ConfigError):
    """A config file that only a code-running YAML loader can read (a Python tag)."""


# top-level keys of a Detectron2 (yacs) YAML config, as opposed to a LazyConfig's
_YACS_TOP_KEYS = ("_BASE_", "MODEL", "SOLVER", "DATASETS", "INPUT", "DATALOADER", "TEST",
                  "OUTPUT_DIR", "VERSION")
_YAML_COMMAND = "retina-focal train (tools/train_net.py)"
_LAZY_COMMAND = "retina-focal lazy-train (tools/lazyconfig_train_net.py)"


def check_config_kind(config_file: str, kind: str) -> str:
    """Refuse a config of the other config system before a parser fails on it deep inside:
    ``kind`` "yaml" (a Detectron2 YAML config, for ``train``) refuses a LazyConfig ``.py``
    file; ``kind`` "lazy" (for ``lazy-train``) refuses a YAML file whose top-level keys are a
    Detectron2 YAML config's (``MODEL``, ``SOLVER``, ``_BASE_``, ...). The message names the
    command that reads the file.

    Returns the file to read: ``config_file``, or where no such file exists, the shipped
    config of that name (:func:`retina_focal.config.zoo.resolve_config_file`); neither is a
    :class:`ConfigFileNotFound`."""
    from retina_focal.config.zoo import resolve_config_file

    if kind not in ("yaml", "lazy"):
        raise ValueError(f"kind={kind!r}: use 'yaml' or 'lazy'")
    config_file = resolve_config_file(config_file)
    if kind == "yaml" and config_file.endswith(".py"):
        raise ConfigError(f"{config_file} is a LazyConfig (.py): run it with {_LAZY_COMMAND}; "
                          "this command reads Detectron2 YAML configs")
    if kind == "lazy" and not config_file.endswith((".py", ".yaml", ".yml")):
        raise ConfigError(f"{config_file} is not a LazyConfig: {_LAZY_COMMAND} reads a .py "
                          "LazyConfig (or the .yaml that LazyConfig.save writes)")
    if config_file.endswith((".yaml", ".yml")) or kind == "yaml":
        data = read_yaml_text(config_file)  # not text, empty, not YAML: named here
    if kind == "lazy" and config_file.endswith((".yaml", ".yml")):
        if isinstance(data, dict) and any(k in data for k in _YACS_TOP_KEYS) and \
                "train" not in data:
            raise ConfigError(f"{config_file} is a Detectron2 YAML config (top-level "
                              f"{sorted(k for k in data if k in _YACS_TOP_KEYS)}): run it "
                              f"with {_YAML_COMMAND}; this command reads LazyConfig files "
                              "(.py, or the .yaml that LazyConfig.save writes)")
    return config_file


class _TagBlindLoader(yaml.SafeLoader):  # type: ignore[misc]  # (PyYAML has no types here)
    """A safe loader that reads any tagged node as plain data, constructing nothing: enough
    to see a file's top-level keys."""


_TagBlindLoader.add_multi_constructor(
    "", lambda loader, suffix, node: None)


def add_allow_unsafe_config_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--allow-unsafe-config`` (store_true, ``args.allow_unsafe_config``) to ``parser``."""
    parser.add_argument(
        ALLOW_UNSAFE_FLAG, action="store_true",
        help="load a YAML config (or a _BASE_ it names) that has Python tags such as "
             "!!python/object/apply:eval, with PyYAML's unsafe loader. This RUNS CODE written "
             "in the file: use it only for files you trust (e.g. Detectron2's own "
             "Base-RetinaNet.yaml)",
    )
    return parser


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG_PREFIX):] if tag.startswith(_YAML_TAG_PREFIX) else tag


def _unsafe_error(path: str, err: yaml.constructor.ConstructorError) -> UnsafeConfigError:
    mark = err.problem_mark or err.context_mark
    where = f"{path}, line {mark.line + 1}" if mark is not None else path
    found = re.search(r"tag '([^']*)'", err.problem or "")
    tag = _short_tag(found.group(1)) if found else None
    if tag is None:  # a construction error of another kind: yaml's own words
        return UnsafeConfigError(f"{where}: {err.problem}; retina_focal loads configs with a "
                                 "safe YAML loader")
    if tag.startswith("!!python/"):
        return UnsafeConfigError(
            f"{where}: '{tag}' is a Python tag; retina_focal loads configs with a safe YAML "
            f"loader (write the value in plain YAML, or pass {ALLOW_UNSAFE_FLAG} to load it "
            "anyway: it runs code)"
        )
    return UnsafeConfigError(f"{where}: '{tag}' is not a tag the safe YAML loader knows; "
                             "write the value in plain YAML")


def _base_path(config_file: str, base: str) -> str:
    """Where a ``_BASE_`` entry points, resolved as fvcore's ``load_yaml_with_base`` does."""
    if base.startswith("~"):
        base = os.path.expanduser(base)
    if not base.startswith(_REMOTE_PREFIXES):
        base = os.path.join(os.path.dirname(config_file), base)
    return base


def read_yaml_text(config_file: str, loader: Any = None) -> Any:
    """``config_file`` parsed by ``loader`` (default :class:`_TagBlindLoader`: tags read as
    plain data, nothing constructed). A file that is not text, is empty or is not YAML is a
    :class:`ConfigError` naming it (and the line); a Python tag, with the safe loader, an
    :class:`UnsafeConfigError`."""
    try:
        with PathManager.open(config_file, "r") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ConfigError(f"{config_file} is not a text file: a config is YAML (or a "
                          "LazyConfig .py) text") from None
    if not text.strip():
        raise ConfigError(f"{config_file} is empty: a config needs at least one key "
                          "(e.g. _BASE_: the config it starts from)")
    try:
        data = yaml.load(text, Loader=loader or _TagBlindLoader)
    except yaml.constructor.ConstructorError as e:
        raise _unsafe_error(config_file, e) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{config_file}{where} is not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{config_file} has no keys (only comments): a config needs at least "
                          "one key (e.g. _BASE_: the config it starts from)")
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file} is a YAML {type(data).__name__}, not a mapping of "
                          "config keys (KEY: value lines)")
    return data


def check_yaml_config(config_file: str, _chain: Optional[List[str]] = None) -> None:
    """Parse ``config_file`` and every ``_BASE_`` it names (recursively) with
    ``yaml.safe_load``, which constructs only plain data.

    Raises:
        UnsafeConfigError: a file has a Python tag (or another tag the safe loader does not
            construct); the message names the file, the line and the tag.
        ConfigError: a file is not YAML text, or is empty; ``_BASE_`` is not a string, or
            the files name each other in a loop.
        ConfigFileNotFound: a ``_BASE_`` file does not exist (naming the file that names it).
    """
    chain = (_chain or []) + [config_file]
    data = read_yaml_text(config_file, yaml.SafeLoader)
    base = data.get("_BASE_") if isinstance(data, dict) else None
    if base is None:
        return
    if not isinstance(base, str):
        raise ConfigError(f"{config_file}: _BASE_ must be a file name, got {base!r}")
    base_file = _base_path(config_file, base)
    if os.path.abspath(base_file) in [os.path.abspath(p) for p in chain]:
        raise ConfigError(f"{config_file}: _BASE_ files name each other in a loop: "
                          + " -> ".join(chain + [base_file]))
    if not PathManager.exists(base_file):
        raise ConfigFileNotFound(f"{config_file}: its _BASE_ {base!r} ({base_file}) does not "
                                 f"exist{_shipped_config_hint(base)}")
    check_yaml_config(base_file, chain)


def _shipped_config_hint(base: str) -> str:
    """Where a ``_BASE_`` that names a shipped config (``Synthetic/...yaml``) really is: a
    ``_BASE_`` is a path, relative to the file that names it."""
    from retina_focal.config.zoo import get_config_file

    try:
        path = get_config_file(base)
    except ConfigError:
        return ""
    return (f"; {base!r} is the name of a shipped config, and _BASE_ takes a path: write "
            f"_BASE_: \"{path}\" (retina_focal.get_config_file({base!r}) gives it)")


def merge_yaml_config(cfg: Any, config_file: str, *, allow_unsafe: bool = False) -> None:
    """``cfg.merge_from_file(config_file)`` without running code unless ``allow_unsafe``.

    The file tree is first checked by :func:`check_yaml_config`, then merged by Detectron2 with
    ``allow_unsafe=False`` (so its own safe load also refuses a Python tag). With
    ``allow_unsafe=True`` Detectron2 falls back to ``yaml.unsafe_load`` for the files that need
    it, logging a warning for each.
    """
    if not allow_unsafe:
        check_yaml_config(config_file)
    try:
        cfg.merge_from_file(config_file, allow_unsafe=allow_unsafe)
    except KeyError as e:
        key = _unknown_key(str(e))
        if key is None:
            raise
        raise unknown_key_error(cfg, key, f"{config_file}: ") from None
    except ValueError as e:  # yacs: "Type mismatch (...) for config key: K"
        if "Type mismatch" not in str(e) or isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{config_file}: {e}") from None


_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.]+)")


def _unknown_key(message: str) -> Optional[str]:
    match = _UNKNOWN_KEY.search(message)
    return match.group(1) if match else None


def _flat_keys(cfg: Any, prefix: str = "") -> List[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys += _flat_keys(v, full + ".") if isinstance(v, dict) else [full]
    return keys


def unknown_key_error(cfg: Any, key: str, where: str = "") -> ConfigError:
    """A :class:`ConfigError` for a key a YAML config does not have, with the closest keys it
    has (``MODEL.RETINANET.NUM_CLASSE``: did you mean ``MODEL.RETINANET.NUM_CLASSES``?)."""
    import difflib

    keys = _flat_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    if not close:  # the same last part under another group (MODEL.RETINA_FOCAL vs RETINANET)
        close = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"{where}unknown config key {key}.{hint}")


def merge_config_overrides(cfg: Any, opts: List[str]) -> None:
    """``cfg.merge_from_list(opts)`` (``KEY VALUE`` pairs from a command line) with errors that
    name the pair: an option (``--dataset``) placed after the overrides, an odd list, an
    unknown key (with the closest keys) or a value of the wrong type are
    :class:`ConfigError`."""
    misplaced = [o for o in opts[::2] if isinstance(o, str) and o.startswith("--")]
    if misplaced:
        raise ConfigError(f"option {misplaced[0]} comes after the KEY VALUE config overrides, "
                          "where it would be read as a key: put options before the overrides")
    if len(opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs, got an odd list: {opts}")
    try:
        cfg.merge_from_list(opts)
    except AssertionError as e:
        key = _unknown_key(str(e))
        if key is None:
            raise
        raise unknown_key_error(cfg, key, "override: ") from None
    except ValueError as e:
        if "Type mismatch" not in str(e):
            raise
        raise ConfigError(f"override: {e}{type_mismatch_fix(str(e))}") from None


_TYPE_MISMATCH = re.compile(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values "
                            r"\((.*) vs\. (.*)\) for config key: ([\w.]+)")


def type_mismatch_fix(message: str) -> str:
    """The override that yacs would take, for its "Type mismatch" ``message``: e.g.
    ``; write MODEL.RETINANET.FOCAL_LOSS_GAMMA -2.0`` for a float key given ``-2``, a tuple
    for a tuple key given one value (``"('my_train',)"``). Empty when none is known."""
    m = _TYPE_MISMATCH.search(message)
    if m is None:
        return ""
    want, got, value, key = m.group(1), m.group(2), m.group(4), m.group(5)
    if want == "float" and got == "int":
        fix = f"{value}.0"
    elif want in ("tuple", "list") and got in ("int", "float", "str"):
        item = repr(value) if got == "str" else value
        fix = f'"({item},)"' if want == "tuple" else f'"[{item}]"'
    elif want == "str":
        fix = f'"{value}"'
    else:
        return ""
    return f"; write {key} {fix}"


def check_lazy_config(config_file: str, *, allow_unsafe: bool = False) -> None:
    """Before ``LazyConfig.load(config_file)``: a ``.yaml``/``.yml`` file (which
    ``LazyConfig.load`` reads with ``yaml.unsafe_load``) must pass :func:`check_yaml_config`
    unless ``allow_unsafe``. A ``.py`` file is Python code and is not checked."""
    if not allow_unsafe and config_file.endswith((".yaml", ".yml")):
        check_yaml_config(config_file)


def _line_in(error: BaseException, config_file: str) -> str:
    """", line N" of the last frame of ``error``'s traceback that runs ``config_file`` (the
    line of the config that failed, or that imported what failed); "" when none does."""
    import traceback

    where = os.path.abspath(config_file)
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if frame.filename and os.path.abspath(frame.filename) == where]
    return f", line {lines[-1]}" if lines else ""


def load_lazy_config(config_file: str, *, allow_unsafe: bool = False) -> Any:
    """``LazyConfig.load(config_file)`` after :func:`check_lazy_config`; a ``.py`` file that
    cannot be run is a :class:`ConfigError` naming the file, the line and what is wrong (not
    the traceback of the ``SyntaxError``, ``ImportError``, ``NameError``, ... that Python
    raised running it: a ``.py`` config is the user's program, so whatever it raises is a fault
    of the config)."""
    import builtins

    from detectron2.config import LazyConfig

    check_lazy_config(config_file, allow_unsafe=allow_unsafe)
    if config_file.endswith(".py"):
        try:
            with open(config_file, "rb") as f:
                source = f.read()
            source.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{config_file} is not a text file (a LazyConfig .py file is "
                              "Python source)") from None
        try:  # the file's own syntax: Detectron2's SyntaxError names no line
            compile(source, config_file, "exec", dont_inherit=True)
        except SyntaxError as e:
            raise ConfigError(f"{config_file}, line {e.lineno} is not valid Python: {e.msg}; "
                              "fix the file (a LazyConfig .py file is a Python program)") \
                from None
    # Detectron2 patches builtins.__import__ while the file runs, and leaves it patched when the
    # file raises: put it back whatever happens
    import_function = builtins.__import__
    try:
        return LazyConfig.load(config_file)
    except SyntaxError as e:  # in a file it imports (Detectron2 names that file)
        cause = e.__cause__ if isinstance(e.__cause__, SyntaxError) else e
        raise ConfigError(f"{config_file}{_line_in(e, config_file)}: {e} (line {cause.lineno}: "
                          f"{cause.msg}); fix that file") from e
    except Exception as e:  # what the config's code raised: ImportError, NameError, ...
        fix = ("fix the import, or install the module" if isinstance(e, ImportError)
               else "fix the config")
        raise ConfigError(f"{config_file}{_line_in(e, config_file)}: running the config raised "
                          f"{type(e).__name__}: {e}; {fix}") from e
    finally:
        builtins.__import__ = import_function
