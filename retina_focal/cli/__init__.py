"""``retina-focal COMMAND [ARGS...]``: the console entry point (installed with the package).

    retina-focal train --config-file configs/Synthetic/retina_focal_R_18_FPN_tiny.yaml
    retina-focal eval --results dets.json --gt-json val.json

docs/tools.md ("The retina-focal command") says how the commands run and what a module holds.
"""
import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command -> (module of this package, tools/ script of the same command line, what it does)
COMMANDS = {
    "train": ("train", "train_net.py", "train / evaluate with a YAML config (Detectron2 trainer)"),
    "lazy-train": ("lazy_train", "lazyconfig_train_net.py",
                   "train / evaluate with a LazyConfig (.py) config"),
    "eval": ("evaluate", "evaluate.py", "COCO evaluation report of a checkpoint or a results file"),
    "demo": ("demo", "demo.py", "annotated images + COCO results of a model on images"),
    "plot": ("plot", "plot_training.py", "training curves (PNG) from metrics.json, runs overlaid"),
    "export": ("export", "export_model.py", "export to ONNX, torch.export or TorchScript"),
    "make-dataset": ("make_dataset", "write_synthetic_coco.py",
                     "write the synthetic dataset as COCO files"),
    "ablate": ("ablate", "ablate.py", "train and evaluate one of the paper's ablation studies"),
    "analyze": ("analyze", "analyze_assignment.py",
                "anchor-assignment statistics of one or several configs on a dataset"),
    "imbalance": ("imbalance", "imbalance.py",
                  "anchor imbalance of datasets (and COCO's), FL - CE of the imbalance study"),
    "visualize": ("visualize", "visualize_assignment.py",
                  "draw the anchors the assigner labels on one image"),
    "benchmark": ("benchmark", "benchmark.py",
                  "time the focal loss, a training step and inference against Detectron2"),
    "benchmark-synthetic": ("benchmark_synthetic", "benchmark_synthetic.py",
                            "time the synthetic config's data path and fused head BatchNorm"),
    "plot-focal-loss": ("plot_focal_loss", "plot_focal_loss.py",
                        "the paper's Figure 1 (and Figure 4 of a trained model)"),
    "gpu-checks": ("gpu_checks", "gpu_checks.py",
                   "CUDA tests, GPU benchmark and recompilation counts into one JSON"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return ("usage: retina-focal COMMAND [ARGS...]   (retina-focal COMMAND --help: its options)"
            "\n\ncommands:\n" + "\n".join(lines) + "\n\n--config-file takes a path or the "
            "name of a shipped config (e.g. Synthetic/retina_focal_R_18_FPN_tiny.yaml; "
            "retina_focal.config.list_configs() lists them). A source checkout also has each "
            "command as a script, tools/<script>.py, with the same options.")


def command_module(command: str):
    """The module of ``command`` (imported on demand: a command pays only for its imports)."""
    return importlib.import_module(f"{__name__}.{COMMANDS[command][0]}")


def main(argv=None) -> int:
    """Run ``retina-focal`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    A command that stops with ``SystemExit`` (argparse, or an ``error: ...`` message) returns
    its status here, its message printed to stderr, as the process would have exited."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose from {', '.join(COMMANDS)}\n\n"
              + usage(), file=sys.stderr)
        return 2
    # argparse names the program after argv[0]: usage and errors then say "retina-focal train"
    if not sys.argv:
        sys.argv.append("")
    program, sys.argv[0] = sys.argv[0], f"retina-focal {command}"
    try:
        status = command_module(command).run(rest)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv[0] = program
    return status if isinstance(status, int) else 0
