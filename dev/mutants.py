#!/usr/bin/env python
"""Hand-written mutation check of ``retina_focal`` (issue 15).

Each mutant changes one documented behaviour (README.md, docs/*.md) by replacing an exact
snippet of one source file, runs the tests that should notice, and restores the file. A
mutant is *killed* when the tests fail, *survived* when they pass (a promise no test pins),
and *error* when it could not be applied or the tests timed out.

Usage::

    .venv/bin/python dev/mutants.py --list
    .venv/bin/python dev/mutants.py --only focal_alpha_swap
    .venv/bin/python dev/mutants.py --output mutants.json

The script refuses to run when a file it mutates has uncommitted changes (``git diff
--quiet``), and restores every file byte for byte (checked with a SHA-256) in a ``finally``,
so an interrupted run cannot leave a mutation behind.
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import List, NamedTuple, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240


class Mutant(NamedTuple):
    name: str
    path: str  # relative to the repository root, under retina_focal/
    original: str  # occurs exactly once in the file
    replacement: str
    tests: Sequence[str]  # pytest arguments: test files, optionally "-k EXPR"
    promise: str  # the documented behaviour the mutant breaks


MUTANTS: List[Mutant] = [
    Mutant("focal_alpha_swap", "retina_focal/ops/focal_loss.py",
           "loss = loss * (alpha if positive else 1 - alpha)",
           "loss = loss * (1 - alpha if positive else alpha)",
           ["tests/ops/test_focal_loss.py"],
           "alpha_t = alpha on positives, 1 - alpha on negatives"),
    Mutant("focal_modulator_pt", "retina_focal/ops/focal_loss.py",
           "unit_pow(torch.sigmoid(sign * x), gamma)",
           "unit_pow(torch.sigmoid(-sign * x), gamma)",
           ["tests/ops/test_focal_loss.py"], "the modulating factor is (1 - p_t) ** gamma"),
    Mutant("prior_bias_sign", "retina_focal/modeling/losses/base.py",
           "[-math.log((1 - prior_prob) / prior_prob)]",
           "[math.log((1 - prior_prob) / prior_prob)]",
           ["tests/modeling/test_anchor_sampling.py", "-k", "prior"],
           "a sigmoid loss's classification bias starts at -log((1 - pi) / pi)"),
    Mutant("head_prior_bias_sign", "retina_focal/modeling/head.py",
           "-math.log((1 - prior_prob) / prior_prob)",
           "math.log((1 - prior_prob) / prior_prob)",
           ["tests/modeling/test_anchor_sampling.py", "-k", "prior"],
           "classification bias starts at -log((1 - pi) / pi): foreground probability pi"),
    Mutant("ema_initial_value", "retina_focal/modeling/training_state.py",
           "                               initial: float = 100.0) -> float:",
           "                               initial: float = 1.0) -> float:",
           ["tests/modeling/test_anchor_sampling.py", "-k", "normalizer"],
           "normalizer 'ema' is Detectron2's EMA (initial value 100) of the positive count"),
    Mutant("batch_normalizer", "retina_focal/modeling/training_state.py",
           "    return total / num_procs\n",
           "    return total / num_procs + 1\n",
           ["tests/modeling/test_anchor_sampling.py", "-k", "normalizer"],
           "normalizer 'batch' divides by the batch's own positive count (the paper)"),
    Mutant("iou_band_boundary", "retina_focal/modeling/anchor_assignment/iou_threshold.py",
           "torch.bucketize(best_iou, bounds, right=True)",
           "torch.bucketize(best_iou, bounds, right=False)",
           ["tests/modeling/test_anchor_assignment.py"],
           "bands are [t_i, t_i+1): IoU == t_i is in the upper band"),
    Mutant("low_quality_min_iou_ge", "retina_focal/modeling/anchor_assignment/iou_threshold.py",
           "eligible = best_per_gt >= self.low_quality_min_iou",
           "eligible = best_per_gt > self.low_quality_min_iou",
           ["tests/modeling/test_anchor_assignment.py"],
           "low-quality matches promote a gt whose best IoU is >= low_quality_min_iou"),
    Mutant("low_quality_order", "retina_focal/modeling/anchor_assignment/iou_threshold.py",
           "promoted &= band_labels != 0",
           "promoted &= band_labels != -1",
           ["tests/modeling/test_anchor_assignment.py"],
           "'detectron' order: a promoted anchor in the background band stays background"),
    Mutant("atss_bessel_std", "retina_focal/modeling/anchor_assignment/atss.py",
           "cand_iou.mean(dim=1) + cand_iou.std(dim=1)",
           "cand_iou.mean(dim=1) + cand_iou.std(dim=1, unbiased=False)",
           ["tests/modeling/test_anchor_assignment.py"],
           "ATSS threshold = mean + std with Bessel's correction"),
    Mutant("atss_threshold_ge", "retina_focal/modeling/anchor_assignment/atss.py",
           "(cand_iou >= thresh[:, None])",
           "(cand_iou > thresh[:, None])",
           ["tests/modeling/test_anchor_assignment.py"],
           "an ATSS candidate is positive if IoU >= t_g"),
    Mutant("ohem_nms_thresh", "retina_focal/modeling/anchor_sampling/ohem.py",
           "rank, self.nms_thresh)]",
           "rank, 1.0)]",
           ["tests/modeling/test_anchor_sampling.py", "-k", "ohem"],
           "OHEM runs greedy NMS at IoU nms_thresh"),
    Mutant("ohem_ignored_in_batch", "retina_focal/modeling/anchor_sampling/ohem.py",
           "by_loss(labels[i] >= 0)",
           "by_loss(labels[i] >= -1)",
           ["tests/modeling/test_anchor_sampling.py", "-k", "ohem"],
           "OHEM never selects ignored anchors"),
    Mutant("ohem_fg_quota", "retina_focal/modeling/anchor_sampling/ohem.py",
           "round(self.batch_size * self.fg_ratio)",
           "round(self.batch_size * (1 - self.fg_ratio))",
           ["tests/modeling/test_anchor_sampling.py", "-k", "ohem"],
           "OHEM takes up to round(batch_size * fg_ratio) positives"),
    Mutant("hnm_ratio", "retina_focal/modeling/anchor_sampling/hard_negative.py",
           "math.floor(self.neg_pos_ratio * num_pos)",
           "math.floor((self.neg_pos_ratio + 1) * num_pos)",
           ["tests/modeling/test_anchor_sampling.py", "-k", "hard_negative"],
           "hard negative mining keeps neg_pos_ratio x #positives"),
    Mutant("softmax_background_drop", "retina_focal/modeling/meta_arch.py",
           "logits.softmax(dim=1)[:, : self.num_classes]",
           "logits.softmax(dim=1)[:, 1:]",
           ["tests/modeling/test_anchor_sampling.py", "-k", "softmax_model_starts"],
           "softmax scoring drops the background (last) column"),
    Mutant("vfl_positive_target", "retina_focal/modeling/losses/iou_aware.py",
           "torch.where(q > 0, q, negative_weight)",
           "torch.where(q > 0, torch.ones_like(q), negative_weight)",
           ["tests/modeling/test_losses.py"], "VFL weights a positive by its IoU target q"),
    Mutant("sanitize_clip", "retina_focal/data/checks.py",
           "min(max(x1, 0.0), w)",
           "max(x1, 0.0)",
           ["tests/data/test_bad_input.py", "-k", "sanitize or clip"],
           "sanitize_dataset_dicts clips boxes to their image"),
    Mutant("mapper_16bit_scale", "retina_focal/data/mapper.py",
           "np.rint(array / 257.0)",
           "np.rint(array)",
           ["tests/data/test_bad_input.py", "-k", "16 or bit or mapper or image"],
           "16-bit images are scaled 0..65535 -> 0..255, not saturated"),
    Mutant("class_map_by_name", "retina_focal/data/class_map.py",
           "perm = [index[n] for n in model_names]",
           "perm = list(range(len(model_names)))",
           ["tests/data/test_data_class_map.py"],
           "classes listed in another order are matched by name"),
    Mutant("strict_inference_load", "retina_focal/engine/checkpoint.py",
           "if self._resuming or self.for_inference:",
           "if self._resuming:",
           ["tests/engine/test_engine_checkpoint.py"],
           "inference refuses a checkpoint that does not fit the model exactly"),
    Mutant("output_dir_lock_excl", "retina_focal/engine/output_dir.py",
           "os.O_WRONLY | os.O_CREAT | os.O_EXCL",
           "os.O_WRONLY | os.O_CREAT | os.O_TRUNC",
           ["tests/engine/test_engine_output_dir.py"],
           "a second run on a live OUTPUT_DIR is refused"),
    Mutant("atomic_write_in_place", "retina_focal/utils/file_io.py",
           "tmp = temporary_path(path)",
           "tmp = path",
           ["tests/utils/test_utils_file_io.py"],
           "atomic_write never leaves a partial file at path"),
    Mutant("safe_yaml_check", "retina_focal/config/loading.py",
           "    if not allow_unsafe:\n        check_yaml_config(config_file)\n    try:\n"
           "        cfg.merge_from_file(config_file, allow_unsafe=allow_unsafe)",
           "    try:\n        cfg.merge_from_file(config_file, allow_unsafe=True)",
           ["tests/config/test_config_loading.py"], "a YAML config with a Python tag is refused"),
    Mutant("results_nan_score", "retina_focal/evaluation/results_file.py",
           "            and math.isfinite(v))",
           "            )",
           ["tests/evaluation/test_evaluation_results_file.py"],
           "a results file with a NaN/inf number is rejected"),
    Mutant("sampler_start_offset", "retina_focal/data/samplers.py",
           "position = self._start_iter * self._total_batch_size + self._rank",
           "position = self._rank",
           ["tests/data/test_data_samplers.py"],
           "resuming at iteration i starts the stream at i * B"),
    Mutant("nonfinite_all_processes", "retina_focal/engine/trainer.py",
           "comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]",
           "[bad]",
           ["tests/engine/test_training.py", "-k", "finite or nan or process"],
           "a non-finite loss on any process stops all processes"),
    Mutant("channels_last_auto_cpu", "retina_focal/engine/device.py",
           '"channels_last" if str(device).startswith("cpu") else "contiguous"',
           '"contiguous" if str(device).startswith("cpu") else "channels_last"',
           ["tests/engine/test_device.py"], "memory_format 'auto' is channels_last on CPU"),
    Mutant("fold_bn_shift", "retina_focal/ops/fold_bn.py",
           "shift = norm.bias - norm.running_mean * scale",
           "shift = norm.bias - norm.running_mean",
           ["tests/engine/test_device.py"], "frozen BN folds to t = beta - mean * s"),
]


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_clean(mutants: Sequence[Mutant]) -> None:
    """Refuse to run when a file to mutate differs from git's index or HEAD."""
    paths = sorted({m.path for m in mutants})
    for cmd in (["git", "diff", "--quiet", "--"], ["git", "diff", "--cached", "--quiet", "--"]):
        if subprocess.run(cmd + paths, cwd=ROOT).returncode != 0:
            sys.exit(f"Refusing to run: uncommitted changes in {' '.join(paths)} "
                     f"(`{' '.join(cmd[:-1])}` reports a difference); commit them first")


def run_mutant(m: Mutant, timeout_s: float) -> dict:
    path = os.path.join(ROOT, m.path)
    with open(path, "rb") as f:
        original = f.read()
    digest = hashlib.sha256(original).hexdigest()
    text = original.decode("utf-8")
    count = text.count(m.original)
    result = {"name": m.name, "file": m.path, "tests": list(m.tests), "promise": m.promise}
    if count != 1:
        return dict(result, status="error", seconds=0.0,
                    detail=f"snippet occurs {count} times (expected exactly once)")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests]
    start = time.perf_counter()
    try:
        with open(path, "wb") as f:
            f.write(text.replace(m.original, m.replacement).encode("utf-8"))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            status, detail = "error", f"timeout after {timeout_s} s"
        else:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            detail = lines[-1] if lines else ""
            if proc.returncode == 0:
                status = "survived"
            elif proc.returncode == 1:
                status = "killed"
            else:  # 2-5: interrupted, internal error, usage error, no tests collected
                status = "error"
    finally:
        with open(path, "wb") as f:
            f.write(original)
        if _sha256(path) != digest:
            raise RuntimeError(f"{m.path} was not restored byte for byte")
    return dict(result, status=status, seconds=round(time.perf_counter() - start, 1),
                detail=detail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", metavar="NAME", action="append",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--output", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds per mutant's test run")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        sys.exit("Duplicate mutant names")
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26s} {m.path:55s} {m.promise}")
        return 0
    selected = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            sys.exit(f"Unknown mutant(s) {unknown}; choose from {names}")
        selected = [m for m in MUTANTS if m.name in args.only]
    check_clean(selected)
    # a kill (SIGTERM) unwinds through run_mutant's ``finally``, which restores the file
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"killed by signal {signum}"))

    results = []
    for m in selected:
        r = run_mutant(m, args.timeout)
        results.append(r)
        print(f"{r['name']:26s} {r['status']:8s} {r['seconds']:7.1f}s  {r['detail'][:60]}",
              flush=True)
    counts = {s: sum(r["status"] == s for r in results) for s in ("killed", "survived", "error")}
    print(f"\n{len(results)} mutants: {counts['killed']} killed, {counts['survived']} survived, "
          f"{counts['error']} error")
    for r in results:
        if r["status"] != "killed":
            print(f"  {r['status']}: {r['name']} ({r['file']}): {r['promise']}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"counts": counts, "results": results}, f, indent=2)
            f.write("\n")
    return 0 if counts["survived"] == 0 and counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
