"""The one matplotlib setup of the package: every plot is written to a file by a tool that may
run without a display (a server, a CI job, a training process), so pyplot is used with the
non-interactive Agg backend, chosen before pyplot is first imported."""

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is only
    needed by the tools that draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
