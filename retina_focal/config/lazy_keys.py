"""Misspelt keys in a LazyConfig are errors, as unknown keys are in a YAML config.

Detectron2's ``LazyConfig.apply_overrides`` creates any key it is given, so
``train.eval_perod=1`` on the command line adds a key nobody reads and the run goes on with
the old ``train.eval_period``; a misspelt argument of a ``LazyCall`` node (in the file or on
the command line) only fails when the node is instantiated, as a bare ``TypeError``. Two checks
close both holes, each a :class:`ConfigError` naming the key, where it was expected and the
closest existing names:

* :func:`check_lazy_overrides` (before the overrides are applied): each ``key=value`` must name
  a key the config has, or an argument the ``LazyCall`` node above it accepts (a constructor
  argument the file leaves at its default). A key meant to be new is written ``+key=value``
  (Hydra's spelling for "add").
* :func:`check_lazy_call_arguments` (after): every key of every ``LazyCall`` node is an argument
  of its target (``**kwargs`` accepts anything).
"""
import difflib
import inspect
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, ListConfig

from retina_focal.config.loading import ConfigError

__all__ = ["argument_keys", "check_lazy_call_arguments", "check_lazy_overrides",
           "lazy_call_nodes"]

_TARGET = "_target_"


def _target_callable(node: DictConfig) -> Optional[Any]:
    """The callable of a ``LazyCall`` node (its ``_target_``, located if a dotted string);
    None if it cannot be found (instantiation reports that)."""
    target = node.get(_TARGET)
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            return locate(target)
        except Exception:
            return None
    return target if callable(target) else None


def _own_parameters(function: Any) -> Tuple[Optional[List[str]], bool]:
    """(keyword arguments of ``function``, whether it also takes ``**kwargs``); (None, True)
    when its signature cannot be read."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None, True
    names, var_keyword = [], False
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return [n for n in names if n != "self"], var_keyword


def _parameters(target: Any) -> Optional[List[str]]:
    """The keyword arguments ``target`` accepts; None when it accepts any (``**kwargs`` that
    go nowhere known) or its signature cannot be read. A class whose ``__init__`` passes
    ``**kwargs`` on to its base class's (RetinaFocal to Detectron2's RetinaNet) accepts the
    base's arguments too."""
    if not inspect.isclass(target):
        names, var_keyword = _own_parameters(target)
        return None if var_keyword else names
    accepted: List[str] = []
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        if cls is object:
            return None  # **kwargs reached object: whatever it is, not checkable here
        names, var_keyword = _own_parameters(vars(cls)["__init__"])
        if names is None:
            return None
        accepted += [n for n in names if n not in accepted]
        if not var_keyword:
            return accepted
    return None


def _target_name(target: Any) -> str:
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target)))


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _unknown_argument(path: str, name: str, target: Any, accepted: List[str],
                      what: str) -> ConfigError:
    return ConfigError(
        f"LazyConfig {what} '{path}': {_target_name(target)} has no argument {name!r}."
        f"{_did_you_mean(name, accepted)} Its arguments: {', '.join(accepted)}")


def _child(node: Any, part: str) -> Any:
    """``node[part]`` without resolving interpolations; (found, child)."""
    if isinstance(node, DictConfig):
        if part not in node:
            return False, None
        return True, node._get_node(part)
    if isinstance(node, ListConfig):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            return False, None
        return True, node._get_node(int(part))
    return False, None


def check_lazy_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if an override ``key=value`` names a key ``cfg`` does not
    have and that no ``LazyCall`` node above it accepts as an argument. ``+key=value`` (add a
    key on purpose) and ``~key`` (delete one) are left to Detectron2's parser."""
    for text in overrides:
        if text.startswith("--"):
            raise ConfigError(f"option {text} comes after the key=value config overrides, where "
                              "it would be read as a key: put options before the overrides")
        if "=" not in text and not text.startswith("~"):
            raise ConfigError(f"LazyConfig override {text!r} is not key=value (write "
                              "train.max_iter=100, with '=' and no spaces)")
        key = text.split("=", 1)[0].strip()
        if not key or key[0] in "+~":
            continue
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            found, child = _child(node, part)
            if found:
                node = child
                continue
            prefix = ".".join(parts[:i]) or "<top level>"
            if isinstance(node, DictConfig) and _TARGET in node and i == len(parts) - 1:
                target = _target_callable(node)
                accepted = _parameters(target) if target is not None else None
                if accepted is None or part in accepted:
                    break  # an argument the file leaves at its default
                raise _unknown_argument(key, part, target, accepted, f"override '{text}':")
            if isinstance(node, (DictConfig, ListConfig)):
                choices = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
                raise ConfigError(
                    f"LazyConfig override '{text}': the config has no key '{key}' ('{prefix}' "
                    f"has no {part!r}).{_did_you_mean(part, choices)} Keys of '{prefix}': "
                    f"{', '.join(map(str, choices)) or '(none)'}. Write +{key}=... to add a "
                    "key on purpose")
            raise ConfigError(f"LazyConfig override '{text}': '{prefix}' is a value, not a "
                              "group of keys")


def lazy_call_nodes(node: Any, path: str = "") -> Iterator[Tuple[str, DictConfig]]:
    """``(dotted path, node)`` of every ``LazyCall`` node (a node with a ``_target_``) of the
    LazyConfig tree ``node`` (itself included), whose path is ``path``."""
    if isinstance(node, DictConfig):
        if _TARGET in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            yield from lazy_call_nodes(child, f"{path}.{key!s}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from lazy_call_nodes(node._get_node(i), f"{path}.{i}")


def check_lazy_call_arguments(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first key of a ``LazyCall`` node that its target
    does not accept (``model.head.prior_prb``: ``RetinaFocalHead has no argument 'prior_prb'.
    Did you mean 'prior_prob'?``), before anything is instantiated."""
    for path, node in lazy_call_nodes(cfg):
        target = _target_callable(node)
        accepted = _parameters(target) if target is not None else None
        if accepted is None:
            continue
        for key in node.keys():
            if key != _TARGET and key not in accepted:
                where = f"{path}.{key!s}" if path else str(key)
                raise _unknown_argument(where, str(key), target, accepted, "key")


def _argument_paths(node: Any, name: str, prefix: str) -> Iterator[Tuple[str, Any]]:
    """``(dotted path, value)`` of every key ``name`` below ``node`` (a LazyConfig tree)."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            path, value = f"{prefix}.{key!s}", node.get(key)
            if key == name:
                yield path, value
            yield from _argument_paths(value, name, path)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _argument_paths(node[i], name, f"{prefix}.{i}")


def argument_keys(tree: DictConfig, prefix: str, error: Any) -> Dict[str, str]:
    """For the arguments an ``InvalidArgument`` ``error`` raised while ``tree`` (e.g.
    ``cfg.model``, ``prefix`` "model") was instantiated: ``{argument: its full key}`` where
    exactly one key of that name in the tree holds the rejected value (e.g. ``prior_prob`` ->
    ``model.head.prior_prob``), so the message names what to edit."""
    keys = {}
    for arg in error.arguments:
        paths = list(_argument_paths(tree, arg, prefix))
        if len(paths) > 1:  # keep those whose value is the one the message rejects
            paths = [(p, v) for p, v in paths if f"{arg}={v!r} " in str(error)]
        if len(paths) == 1:
            keys[arg] = paths[0][0]
    return keys
