"""Argument types the commands share: a bad number is argparse's usage error naming the
option (``error: argument --iou-bins: 0 is not an integer >= 1``), before anything runs."""
import argparse

__all__ = ["command_parser", "int_at_least", "int_in", "positive_float"]


def command_parser(**kwargs) -> argparse.ArgumentParser:
    """A command's ``ArgumentParser`` (``kwargs`` as argparse's), whose options must be written
    in full: argparse's default would silently take ``--dataset`` for ``--datasets``."""
    return argparse.ArgumentParser(allow_abbrev=False, **kwargs)


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
