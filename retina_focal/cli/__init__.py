"""``retina-focal COMMAND [ARGS...]``: the console entry point (installed by ``pip install -e .``).

It runs the repository's ``tools/`` scripts, which stay the documented way in; every argument
after the command goes to the script unchanged::

    retina-focal train --config-file configs/Synthetic/retina_focal_R_18_FPN_tiny.yaml
    retina-focal eval --results dets.json --gt-json val.json
    retina-focal demo --config-file CFG --input images/ MODEL.WEIGHTS model_final.pth
"""
import os
import subprocess
import sys

__all__ = ["COMMANDS", "main"]

# command -> (script in tools/, what it does)
COMMANDS = {
    "train": ("train_net.py", "train / evaluate with a YAML config (Detectron2 trainer)"),
    "lazy-train": ("lazyconfig_train_net.py", "train / evaluate with a LazyConfig (.py) config"),
    "eval": ("evaluate.py", "COCO evaluation report of a checkpoint or a results file"),
    "demo": ("demo.py", "annotated images + COCO results of a model on images"),
    "plot": ("plot_training.py", "training curves (PNG) from metrics.json, runs overlaid"),
    "export": ("export_model.py", "TorchScript export"),
    "make-dataset": ("write_synthetic_coco.py", "write the synthetic dataset as COCO files"),
}


def tools_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc} (tools/{script})"
             for name, (script, desc) in COMMANDS.items()]
    return "usage: retina-focal COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose from {', '.join(COMMANDS)}\n\n"
              + usage(), file=sys.stderr)
        return 2
    script = os.path.join(tools_dir(), COMMANDS[command][0])
    if not os.path.isfile(script):
        print(f"error: {script} does not exist: retina-focal runs the repository's tools/ "
              "scripts, so it needs the package installed from its source tree "
              "(pip install -e .)", file=sys.stderr)
        return 2
    # A child process (not runpy): Detectron2's launcher spawns workers that re-import the
    # script's __main__, which must be the script itself.
    return subprocess.call([sys.executable, script] + rest)


if __name__ == "__main__":
    sys.exit(main())
