"""The record of a finished ablation run, ``result.json`` in its folder, and the key that says
whether a run asked for now is the same run (to resume it, or to reuse another study's).

The key is the SHA-256 of the run's fully resolved config (:func:`resolved_config`: the base
config file with everything it inherits, retina_focal's defaults, the schedule's, the command
line's and the setting's overrides, with ``OUTPUT_DIR`` blanked), plus the ``--dataset`` files
the run registers. Editing the base config file, or a package upgrade that changes a shipped
config or a default, changes the key: the old run is not taken for the new one.

A record written before the key had the config's hash (``signature`` without
``config_sha256``) is still taken when its config file and overrides are the command's: such a
run cannot be checked against the config's content, and the runner says so.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from retina_focal.ablation.studies import Setting, Study

__all__ = ["RESULT_FILE", "compare_record", "config_digest", "dataset_fingerprints",
           "describe_difference", "finished_runs", "override_pairs", "resolved_config",
           "run_of_label", "run_signature"]

# a run's record, written last: its presence means the run finished
RESULT_FILE = "result.json"

# compare_record's answers
SAME = "same"
LEGACY = "legacy"  # a record without the config's hash, whose config file and overrides match


def resolved_config(cfg: Any) -> Dict[str, Any]:
    """The merged config ``cfg`` (a CfgNode) as plain JSON values, ``OUTPUT_DIR`` blanked
    (each run has its own): what a run trains, whatever the files and overrides it came from."""
    config = json.loads(json.dumps(cfg, sort_keys=True, default=repr))
    config["OUTPUT_DIR"] = ""
    return config


def config_digest(config: Dict[str, Any]) -> str:
    """SHA-256 of :func:`resolved_config`'s output (keys sorted: the same config, the same
    digest, in any process)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprints(specs: Sequence[Tuple[str, str, str]]) -> List[Dict[str, str]]:
    """Each ``--dataset`` ``(name, json_file, image_root)`` as the key records it: the name,
    both paths made absolute and the annotation file's SHA-256 (another file under the same
    name is another run)."""
    return [{"name": name, "json_file": os.path.abspath(json_file),
             "image_root": os.path.abspath(image_root),
             "json_sha256": _file_digest(json_file)} for name, json_file, image_root in specs]


def run_signature(config_file: str, opts: Sequence[str], config: Dict[str, Any],
                  datasets: Sequence[Dict[str, str]] = ()) -> Dict[str, Any]:
    """A run's key, stored in its record: ``config_sha256`` (:func:`config_digest` of its
    resolved ``config``) and ``datasets`` decide; ``config_file`` (absolute) and ``opts`` (the
    overrides, in order) say how it was asked for, and match records written before the
    hash."""
    signature: Dict[str, Any] = {"config_file": os.path.abspath(config_file),
                                 "opts": [str(o) for o in opts],
                                 "config_sha256": config_digest(config)}
    if datasets:
        signature["datasets"] = list(datasets)
    return signature


def compare_record(record: Dict[str, Any], signature: Dict[str, Any]) -> Optional[str]:
    """Whether the run of ``record`` is the run of ``signature``: ``"same"`` (the same
    resolved config and datasets), ``"legacy"`` (a record without the config's hash whose
    config file and overrides are the same), or None (another run)."""
    theirs = record.get("signature")
    if not isinstance(theirs, dict):
        return None
    if "config_sha256" in theirs:
        same = (theirs["config_sha256"] == signature["config_sha256"]
                and theirs.get("datasets", []) == signature.get("datasets", []))
        return SAME if same else None
    same = (theirs.get("config_file") == signature["config_file"]
            and theirs.get("opts") == signature["opts"] and not signature.get("datasets"))
    return LEGACY if same else None


def override_pairs(opts: Sequence[Any]) -> Dict[Any, Any]:
    """``KEY VALUE`` overrides as {key: value}, the last one of a key winning (as in yacs)."""
    opts = list(opts)
    return dict(zip(opts[::2], opts[1::2]))


_MISSING = "(no such key)"


def _flat(config: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix[:-1]: config}
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def describe_difference(record: Dict[str, Any], signature: Dict[str, Any],
                        config: Dict[str, Any], limit: int = 4) -> str:
    """What differs between the run of ``record`` and the run of ``signature`` (its resolved
    ``config``), in words: the base config file, the overrides (key by key), the datasets, or
    the keys of the resolved config (up to ``limit``)."""
    stored_signature = record.get("signature")
    theirs: Dict[str, Any] = stored_signature if isinstance(stored_signature, dict) else {}
    parts = []
    if theirs.get("config_file") != signature["config_file"]:
        parts.append(f"base config {theirs.get('config_file')} there, "
                     f"{signature['config_file']} here")
    then = override_pairs([str(o) for o in theirs.get("opts") or []])
    now = override_pairs([str(o) for o in signature["opts"]])
    asked = [f"{key} {then.get(key, '(not set)')} there, {now.get(key, '(not set)')} here"
             for key in sorted(set(then) | set(now)) if then.get(key) != now.get(key)]
    if theirs.get("datasets", []) != signature.get("datasets", []):
        asked.append("other --dataset files (or files changed since)")
    parts += asked[:limit] + ([f"{len(asked) - limit} more override(s)"]
                              if len(asked) > limit else [])
    if not asked and "config_sha256" in theirs:  # asked alike: the config's content differs
        stored = record.get("config")
        keys: List[str] = []
        if isinstance(stored, dict):
            then_cfg, now_cfg = _flat(stored), _flat(config)
            keys = [k for k in sorted(set(then_cfg) | set(now_cfg))
                    if then_cfg.get(k, _MISSING) != now_cfg.get(k, _MISSING)]
            parts += [f"{k} {then_cfg.get(k, _MISSING)} there, {now_cfg.get(k, _MISSING)} here"
                      for k in keys[:limit]]
            if len(keys) > limit:
                parts.append(f"{len(keys) - limit} more config key(s)")
        if not keys:
            parts.append("the resolved config differs: the base config file, a file it "
                         "inherits or the package's defaults changed since")
    return "; ".join(parts)


def run_of_label(study: Study, label: Any) -> Optional[Tuple[Setting, Optional[int]]]:
    """The setting and seed of the run labelled ``label`` (``"L"`` or ``"L seed=N"``) in
    ``study``, or None if it is not one of its runs."""
    if not isinstance(label, str):
        return None
    by_label = {s.label: s for s in study.settings}
    if label in by_label:
        return by_label[label], None
    head, sep, seed = label.rpartition(" seed=")
    if sep and seed.isdigit() and head in by_label:
        return by_label[head], int(seed)
    return None


def finished_runs(study_dir: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``(run folder, record)`` of every folder directly under ``study_dir`` that holds a
    readable record (a finished run), by folder name."""
    if not os.path.isdir(study_dir):
        return []
    found = []
    for name in sorted(os.listdir(study_dir)):
        path = os.path.join(study_dir, name, RESULT_FILE)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            found.append((os.path.join(study_dir, name), record))
    return found
