"""What a search is before its first trial: its role in a distributed search, the settings that decide its trials
(`search.json`), and the checks that refuse a tuner directory or capture folder it cannot use.

`python -m meteor_tf.tune` (meteor_tf.cli.tune) turns its flags into these calls; nothing here reads flags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

from meteor_tf.config import ExperimentConfig
from meteor_tf.io import write_json

SEARCH_RECORD = "search.json"  # the settings a rerun must match to resume the search in its tuner directory


def distributed_role(environ: Optional[Mapping[str, str]] = None) -> str:
    """'standalone', 'chief' or 'worker', from Keras Tuner's environment variables (checked, naming them)."""
    env = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in env:
        if "KERASTUNER_ORACLE_PORT" in env:
            raise ValueError("KERASTUNER_ORACLE_PORT is set but KERASTUNER_ORACLE_IP is not: set both (and "
                             "KERASTUNER_TUNER_ID) for a distributed search, or neither")
        return "standalone"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not env.get(v)]
    if missing:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not: a distributed search needs "
                         "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID (chief, tuner0, ...)")
    return "chief" if "chief" in env["KERASTUNER_TUNER_ID"] else "worker"


def search_settings(base: ExperimentConfig, space: dict, *, tuner: str, objective: str, tune_folds: int,
                    objective_precision: float, hyperband_max_epochs: int, hyperband_factor: int,
                    hyperband_iterations: int, bayesian_initial_points: int) -> dict:
    """What decides a search's trials (search.json); a rerun must match it (--max_trials may grow). Settings a
    tuner or objective does not use are left out."""
    from meteor_tf.tuning.hypermodel import space_to_dict

    settings = {"tuner": tuner, "objective": objective, "tune_folds": tune_folds, "space": space_to_dict(space),
                "base_config": {k: v for k, v in base.to_dict().items() if k not in ExperimentConfig.NOT_IN_RUN_ID}}
    if objective == "recall_at_precision":
        settings["objective_precision"] = objective_precision
    if tuner == "hyperband":
        settings["hyperband"] = {"max_epochs": hyperband_max_epochs, "factor": hyperband_factor,
                                 "iterations": hyperband_iterations}
    if tuner == "bayesian":
        settings["bayesian_initial_points"] = bayesian_initial_points
    return json.loads(json.dumps(settings, default=list))


def check_tuner_dir(tuner_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuses to resume a search made with other settings, and to --overwrite a directory that is no search."""
    record = tuner_dir / SEARCH_RECORD
    is_search = record.exists() or (tuner_dir / "oracle.json").exists()
    if overwrite:
        if tuner_dir.exists() and any(tuner_dir.iterdir()) and not is_search:
            raise ValueError(f"--overwrite would delete {tuner_dir}, which holds no search (no search.json or "
                             "oracle.json): pick an empty or new --tuner_dir")
        return
    if record.exists():
        saved = json.loads(record.read_text())
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            detail = differ
            if "base_config" in differ:
                b0, b1 = saved.get("base_config", {}), settings["base_config"]
                detail = [k for k in differ if k != "base_config"] + sorted(k for k in set(b0) | set(b1)
                                                                           if b0.get(k) != b1.get(k))
            raise ValueError(f"{tuner_dir} holds a search with other settings ({', '.join(detail)} differ): rerun "
                             "with the same flags to resume it, or use another --tuner_dir, or --overwrite to start "
                             "over")


def has_search_record(tuner_dir: Path) -> bool:
    return (tuner_dir / SEARCH_RECORD).exists()


def write_search_record(tuner_dir: Path, settings: dict) -> None:
    """Records the settings (atomically) once the directory is checked; --overwrite may have just deleted it."""
    tuner_dir.mkdir(parents=True, exist_ok=True)
    write_json(tuner_dir / SEARCH_RECORD, settings)


def check_data(base: ExperimentConfig) -> None:
    """A capture folder's layout is checked before the search starts (headers only, nothing decoded)."""
    if base.data != "embedded":
        from meteor_tf.data import folder

        folder.scan_folder(base.data, class_dirs=base.class_dirs)
