"""Argument types the commands share: a bad number is argparse's usage error naming the
option (``error: argument --iou-bins: 0 is not an integer >= 1``), before anything runs."""
import argparse
from dataclasses import fields
from typing import List, Sequence, Tuple

__all__ = ["CommandParser", "command_parser", "comma_separated", "int_at_least", "int_in",
           "launch_settings", "positive_float", "refuse_unknown_options", "refuse_unused",
           "run_options"]


def command_parser(**kwargs) -> argparse.ArgumentParser:
    """A command's ``ArgumentParser`` (``kwargs`` as argparse's), whose options must be written
    in full: argparse's default would silently take ``--dataset`` for ``--datasets``; an
    option it does not have, written among its trailing ``KEY VALUE`` overrides, is refused
    as such (:func:`refuse_unknown_options`)."""
    return CommandParser(allow_abbrev=False, **kwargs)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses, after parsing, an option it does not have among the
    trailing ``KEY VALUE`` overrides (:func:`refuse_unknown_options`)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        refuse_unknown_options(self, parsed)
        return parsed, extras


def refuse_unknown_options(parser: argparse.ArgumentParser, args: argparse.Namespace,
                           pairs: bool = True) -> None:
    """Refuse (argparse's usage error, status 2) a ``--name`` that ``parser`` does not have,
    written where its trailing overrides (its ``nargs=REMAINDER`` argument) take a key: the
    override checks would call it an option misplaced after the overrides, which is wrong
    advice for a command without it. The error says it is not an option of the command and
    lists the command's options. ``pairs``: the overrides are ``KEY VALUE`` pairs (a key every
    other word); else each word is one (``key=value``)."""
    options = [o for action in parser._actions for o in action.option_strings
               if o.startswith("--")]
    for action in parser._actions:
        if action.nargs != argparse.REMAINDER:
            continue
        words = [str(w) for w in getattr(args, action.dest, None) or []]
        for word in words[::2] if pairs else words:
            name = word.split("=", 1)[0]
            if name.startswith("--") and name not in options:
                parser.error(f"{name} is not an option of {parser.prog} (its options: "
                             f"{', '.join(options)}; {parser.prog} --help says what each does)")


def int_at_least(low: int):
    """An ``argparse`` type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not an integer >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def int_in(low: int, high: int):
    """An ``argparse`` type: an integer in ``[low, high]``."""
    at_least = int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is not an integer in [{low}, {high}]")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a number > 0")
    return value


def comma_separated(text: str) -> List[str]:
    """An ``argparse`` type: names separated by commas (``a,b``; spaces around a name are
    dropped). An empty name (``a,,b``, a comma at either end, nothing at all) is refused, not
    silently skipped."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r} has an empty name: give NAME,NAME,... with one comma between names")
    return names


comma_separated.__name__ = "NAME,NAME,..."


# the options of engine.defaults.default_argument_parser that run_options passes by name
_RUN_OPTIONS = ("config_file", "opts", "eval_only", "resume", "dataset", "allow_unsafe_config",
                "num_gpus", "num_machines", "machine_rank", "dist_url")


def launch_settings(args: argparse.Namespace):
    """The processes a command line of ``default_argument_parser`` asks for."""
    from retina_focal.engine.launch import LaunchSettings

    # the settings' fields are named as the parser's options
    return LaunchSettings(**{f.name: getattr(args, f.name) for f in fields(LaunchSettings)})


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``setup_cfg`` / ``setup_lazy_cfg`` from a command line of
    ``default_argument_parser``; the command's own options go as ``extra_options`` (Detectron2's
    ``default_setup`` logs the whole command line)."""
    return dict(config_file=args.config_file, opts=list(args.opts or []),
                eval_only=args.eval_only, resume=args.resume,
                # Detectron2's own parser has neither option
                datasets=list(getattr(args, "dataset", None) or []),
                allow_unsafe=getattr(args, "allow_unsafe_config", False),
                launch=launch_settings(args),
                extra_options={k: v for k, v in vars(args).items() if k not in _RUN_OPTIONS})


def refuse_unused(given: Sequence[Tuple[str, bool]], mode: str) -> None:
    """Refuse, naming them, the options of ``given`` (``(option, was given)`` pairs) that have
    no effect in ``mode`` (how the command runs now, e.g. "--results evaluates a detections
    file without a model"): what would be ignored is an error, not silently dropped."""
    unused = [option for option, was_given in given if was_given]
    if unused:
        raise SystemExit(f"error: {mode}: {', '.join(unused)} would have no effect; leave "
                         f"{'it' if len(unused) == 1 else 'them'} out")
