"""`make reproduce`'s stages: each one run of a real entry point in a subprocess, and their order.

The sweep (`python -m contrastive.train -m +sweeps=<config>`), one training run per ablation row
(`python -m contrastive.train ...`, scored on the test split with distractors) and the final model on the test
split's own corpus (`python -m contrastive.evaluate ...`), each with its own log in the work dir. A rerun
resumes: the Optuna study resumes, and a row whose run dir holds a metrics.json made with the same overrides is
read instead of retrained. `run` takes the typed settings (contrastive.reproduce.settings.ReproduceSettings) and
hands the numbers to `contrastive.reproduce.report`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastive.errors import ConfigError, UserError
from contrastive.reproduce import report
from contrastive.reproduce.settings import AblationRow, ReproduceBlock, ReproduceSettings

log = logging.getLogger("contrastive.reproduce")


class StageFailed(UserError):
    """A stage's subprocess exited non-zero (its log has the details)."""


def row_overrides(rows: Sequence[AblationRow], best_params: dict[str, Any]) -> list[list[str]]:
    """Each ablation row's cumulative overrides: its `set` and `from_best` added to the previous rows'."""
    from hydra_plugins.contrastive_sweeper.search_space import format_value

    out, current = [], {}
    for i, row in enumerate(rows):
        for item in row.set or []:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ConfigError(f"reproduce.ablation[{i}].set: {item!r} is not key=value")
            current[key] = value
        for key in row.from_best or []:
            if key not in best_params:
                raise ConfigError(
                    f"reproduce.ablation[{i}].from_best: {key!r} is not a parameter of the sweep "
                    f"(it searched {sorted(best_params)})"
                )
            current[key] = format_value(best_params[key])
        out.append([f"{k}={v}" for k, v in current.items()])
    return out


# ---------------------------------------------------------------- one stage
def run_stage(args: Sequence[str], log_path: Path) -> None:
    """Run one entry point, its output streamed to the console and to `log_path`; raise StageFailed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[reproduce] $ {' '.join(args)}\n[reproduce]   log: {log_path}", flush=True)
    with open(log_path, "w") as handle:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            handle.flush()
            if not line.startswith(("Batches:", "Computing widget")):
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise StageFailed(
            f"stage `{' '.join(args[:3])}` exited {code}: {failure_line(log_path.read_text())} (full log: {log_path})"
        )


def failure_line(text: str) -> str:
    """The line of a stage's log that says why it failed: the last error line, else the last line."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^(error:|[A-Za-z_.]*(Error|Exception)\b)", line)]
    return (errors or lines or ["(no output)"])[-1]


# ---------------------------------------------------------------- the stages
def sweep_stage(rp: ReproduceBlock, work: Path) -> dict[str, Any]:
    """Run (or resume) the sweep; its summary.json."""
    sweep_dir = work / "sweep"
    run_stage(
        [
            "-m",
            "contrastive.train",
            "-m",
            f"+sweeps={rp.sweep.config}",
            *rp.data,
            *rp.extra,
            *rp.sweep.overrides,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        work / "logs" / "sweep.log",
    )
    summary = json.loads((sweep_dir / "summary.json").read_text())
    if not summary.get("best_params"):
        raise StageFailed(f"sweep: no trial completed ({summary.get('states')}); see {work / 'logs' / 'sweep.log'}")
    return summary


def check_eval_only(rows: Sequence[AblationRow], overrides: Sequence[list[str]]) -> None:
    """An `eval_only` row may differ from the row above only by `model.interpolate` (a WiSE-FT mix of the same
    training run): anything else would need a training of its own."""
    for i, row in enumerate(rows):
        if not row.eval_only:
            continue
        changed = sorted(set(overrides[i]) ^ set(overrides[i - 1]))
        if not changed or any(not item.startswith("model.interpolate=") for item in changed):
            raise ConfigError(
                f"reproduce.ablation[{i}].eval_only: the row must add only model.interpolate to the row above "
                f"(it changes {changed or 'nothing'})"
            )


def same_training(rp: ReproduceBlock, a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two rows' overrides make the same training settings (e.g. the sweep promoted a default value):
    the typed settings composed from each, `loss.directions` compared as names."""
    import dataclasses

    def settings(overrides: Sequence[str]) -> Any:
        s = row_settings(rp, overrides)
        return dataclasses.replace(s, loss=dataclasses.replace(s.loss, directions=list(s.loss.direction_names)))

    return settings(a) == settings(b)


def row_settings(rp: ReproduceBlock, overrides: Sequence[str]) -> Any:
    """The typed training settings a row's overrides compose (with the stages' data and extra)."""
    from contrastive.cli import compose_config
    from contrastive.settings import load_train

    return load_train(compose_config([*rp.data, *rp.extra, *overrides]))


def unmixed_metrics(mixed: dict[str, Any], shared_with: str) -> dict[str, Any]:
    """The row above an `eval_only` row: the same run's alpha = 1 mix (the tuned weights before WiSE-FT), read from
    metrics.json `interpolate`; its run time is counted once, on the row that ran."""
    from contrastive.interpolate import alpha_key

    entry = (mixed.get("interpolate") or {}).get(alpha_key(1.0))
    if entry is None:
        raise StageFailed(f"row {shared_with}: metrics.json has no interpolate[{alpha_key(1.0)}] (the unmixed model)")
    return mixed | {"finetuned": entry["finetuned"], "delta": entry["delta"], "wall_time_s": None}


def test_protocol(rp: ReproduceBlock) -> list[str]:
    """The eval overrides of the report's test protocol: split, distractors, their cap, bootstrap resamples."""
    return [
        f"eval.split={rp.test.split}",
        f"eval.distractors={rp.test.distractors}",
        f"eval.max_distractors={'null' if rp.test.max_distractors is None else rp.test.max_distractors}",
        f"eval.n_boot={rp.test.n_boot}",
    ]


def row_args(rp: ReproduceBlock, run_dir: Path, name: str, overrides: Sequence[str]) -> list[str]:
    """The training overrides of one ablation row: the stages' data and extra, the budget, the row's overrides,
    the test protocol, its run dir and run name."""
    budget = "null" if rp.budget_pairs is None else rp.budget_pairs
    return [
        *rp.data,
        *rp.extra,
        f"data.max_pairs={budget}",
        "loss.mining.pool_pairs=null",  # the budget caps training only: mining and the test protocol see all
        "eval.max_pairs=null",
        *overrides,
        *test_protocol(rp),
        f"hydra.run.dir={run_dir}",
        f"run_name=reproduce-{name}",
    ]


def row_stage(rp: ReproduceBlock, work: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    """Train one ablation row at the budget and score it on the test split (with distractors)."""
    run_dir = work / "rows" / name
    stamp = run_dir / "reproduce_overrides.json"
    args = row_args(rp, run_dir, name, overrides)
    if (run_dir / "metrics.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == args:
        print(f"[reproduce] row {name}: done before with the same overrides ({run_dir})", flush=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_stage(["-m", "contrastive.train", *args], work / "logs" / f"row_{name}.log")
        stamp.write_text(json.dumps(args))
    return json.loads((run_dir / "metrics.json").read_text())


def known_overrides(extra: Sequence[str], heads: Sequence[str], device_key: str) -> list[str]:
    """The `reproduce.extra` overrides whose top-level key is in `heads` (the ones another entry point's config
    knows); training-only ones are left out and `trainer.device` becomes `device_key`."""
    out = []
    for item in extra:
        key, _, value = str(item).lstrip("+~").partition("=")
        if key == "trainer.device":
            out.append(f"{device_key}={value}")
        elif key.split(".", 1)[0] in heads:
            out.append(str(item))
    return out


def evaluate_overrides(extra: Sequence[str]) -> list[str]:
    """The `reproduce.extra` overrides that conf/evaluate.yaml knows (its groups, `device`, hydra)."""
    return known_overrides(extra, ("model", "data", "eval", "paths", "device", "hydra"), "device")


def own_corpus_stage(rp: ReproduceBlock, work: Path, model_dir: Path) -> dict[str, Any]:
    """The final model on the test split's own corpus (no distractors)."""
    out = work / "final_own_corpus.json"
    run_stage(
        [
            "-m",
            "contrastive.evaluate",
            f"checkpoint={model_dir}",
            f"eval.split={rp.test.split}",
            *rp.data,
            *evaluate_overrides(rp.extra),
            "eval.distractors=none",
            f"eval.n_boot={rp.test.n_boot}",
            f"json={out}",
            f"hydra.run.dir={work / 'final_own_corpus'}",
        ],
        work / "logs" / "final_own_corpus.log",
    )
    return json.loads(out.read_text())


def merge_stage(rp: ReproduceBlock, work: Path, final_model: Path) -> dict[str, Any] | None:
    """`reproduce.merge`: the final model and the listed rows' models merged on VAL (contrastive.merge), then the
    soup scored on the test split with the rows' protocol; its merge.json record and test metrics (None: off)."""
    if not rp.merge.enabled or not rp.merge.rows:
        return None
    out = work / "merge"
    ingredients = [str(final_model), *(str(work / "rows" / name / "model") for name in rp.merge.rows)]
    args = [
        f"checkpoints=[{','.join(ingredients)}]",
        f"merge.method={rp.merge.method}",
        "eval.split=val",
        *rp.data,
        *evaluate_overrides(rp.extra),
    ]
    stamp, record, scored = out / "reproduce_overrides.json", out / "model" / "merge.json", out / "test.json"
    if not (scored.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == args):
        shutil.rmtree(out, ignore_errors=True)
        run_stage(
            ["-m", "contrastive.merge", *args, f"output={out / 'model'}", f"hydra.run.dir={out / 'run'}"],
            work / "logs" / "merge.log",
        )
        test = [f"checkpoint={out / 'model'}", *rp.data, *evaluate_overrides(rp.extra), *test_protocol(rp)]
        run_stage(
            ["-m", "contrastive.evaluate", *test, f"json={scored}", f"hydra.run.dir={out / 'test_run'}"],
            work / "logs" / "merge_test.log",
        )
        stamp.write_text(json.dumps(args))
    merged = json.loads(record.read_text())
    return {
        "method": merged["method"],
        "ingredients": ["final", *rp.merge.rows],
        "kept": merged["kept"],
        "weights": merged["weights"],
        "val": {k: merged[k] for k in ("finetuned", "baseline", "delta")},
        "test": {k: v for k, v in json.loads(scored.read_text()).items() if k in ("finetuned", "baseline", "delta")},
    }


def teacher_overrides(extra: Sequence[str]) -> list[str]:
    """The `reproduce.extra` overrides that conf/teacher.yaml knows; `trainer.device` becomes `teacher.device`."""
    heads = ("model", "data", "eval", "paths", "teacher", "tracking", "hydra")
    return known_overrides(extra, heads, "teacher.device")


def uses_teacher(rp: ReproduceBlock, overrides: Sequence[str]) -> bool:
    """Whether a row's training asks for the teacher (a loss lever or silver pairs)."""
    s = row_settings(rp, overrides)
    return bool(s.loss.uses_teacher or s.data.silver.enabled)


def teacher_stage(rp: ReproduceBlock, work: Path, final_overrides: Sequence[str]) -> dict[str, Any] | None:
    """The rows' teacher (the same cached cross-encoder) scored on the test split's labeled pairs beside the untuned
    bi-encoder (python -m contrastive.teacher), with its training record; None when the final row uses no teacher."""
    if not uses_teacher(rp, final_overrides):
        return None
    out = work / "teacher_test.json"
    args = [*rp.data, *teacher_overrides(rp.extra), f"eval.split={rp.test.split}", f"eval.n_boot={rp.test.n_boot}"]
    stamp = work / "teacher_test_overrides.json"
    if not (out.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == args):
        run_stage(
            [
                "-m",
                "contrastive.teacher",
                *args,
                f"json={out}",
                "run_name=reproduce-teacher",
                f"hydra.run.dir={work / 'teacher'}",
            ],
            work / "logs" / "teacher_test.log",
        )
        stamp.write_text(json.dumps(args))
    scored = json.loads(out.read_text())
    return {k: scored.get(k) for k in ("digest", "split", "n_pairs", "teacher", "baseline", "delta", "training")}


def set_aside(work: Path) -> Path | None:
    """Start over without losing the last run: move `work` to `<work>.previous` (replacing an older one)."""
    if not work.exists():
        return None
    previous = work.with_name(work.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    work.rename(previous)
    print(f"[reproduce] fresh start: the last run's stages moved to {previous}", flush=True)
    return previous


# ---------------------------------------------------------------- the sweep's study
def sweep_study(sweep_dir: Path, study_name: str) -> Any:
    """The sweep's Optuna study (from its SQLite file), or None when it cannot be read."""
    import optuna

    from hydra_plugins.contrastive_sweeper.trial import rdb_storage

    try:
        return optuna.load_study(study_name=study_name, storage=rdb_storage(f"sqlite:///{sweep_dir / 'optuna.db'}"))
    except (KeyError, ValueError, RuntimeError) as exc:
        log.warning("sweep study unreadable (no duration or importances): %s", exc)
        return None


def study_span_s(study: Any) -> float:
    """Seconds the sweep's trials took, resumes included: the sum of each trial's start-to-end time over the
    trials that ran (0 without a study)."""
    if study is None:
        return 0.0
    ran = [
        t
        for t in study.get_trials(deepcopy=False)  # a trial failed before it ran has no output dir
        if t.datetime_start and t.datetime_complete and t.user_attrs.get("output_dir")
    ]
    return round(sum((t.datetime_complete - t.datetime_start).total_seconds() for t in ran), 1)


def importances(study: Any) -> dict[str, dict[str, float]]:
    """`sweep_report.param_importances` for each objective of the sweep's study, rounded ({} without a study)."""
    from contrastive.sweep_report import param_importances

    if study is None:
        return {}
    ranked = {str(i): param_importances(study, i) for i in range(len(study.directions))}
    return {i: {k: round(float(v), 3) for k, v in r.items()} for i, r in ranked.items() if r}


def sweep_facts(root_dir: str, config: str) -> tuple[Any, list[str]]:
    """The sweep config's pairs cap (`all` when it sets none) and objectives, from sweeps/<config>.yaml."""
    from omegaconf import OmegaConf

    sweep_cfg = OmegaConf.load(Path(root_dir) / "sweeps" / f"{config}.yaml")
    pairs = OmegaConf.select(sweep_cfg, "data.max_pairs", default="all")
    return pairs, list(OmegaConf.select(sweep_cfg, "eval.objective", default=[]) or [])


# ---------------------------------------------------------------- all of them
def run(settings: ReproduceSettings, command: str) -> dict[str, Any]:
    """All stages; writes results/ and README's Results section; returns results.json's content."""
    import platform

    rp = settings.reproduce
    work, out = Path(rp.work_dir), Path(rp.results_dir)
    if rp.fresh:
        set_aside(work)
    started = time.time()
    summary = sweep_stage(rp, work)
    study = sweep_study(work / "sweep", summary["study_name"])
    summary["wall_time_s"] = study_span_s(study)
    all_overrides = row_overrides(rp.ablation, summary["best_params"])
    check_eval_only(rp.ablation, all_overrides)
    scored: dict[int, dict[str, Any]] = {}
    same_as: dict[int, int] = {}  # a row whose overrides equal the row above's (the sweep kept a default): its run
    for i, (row, overrides) in enumerate(zip(rp.ablation, all_overrides, strict=True)):
        if i + 1 < len(rp.ablation) and rp.ablation[i + 1].eval_only:
            continue  # trained once with the row below, which also scores the unmixed weights
        if i > 0 and i - 1 in scored and same_training(rp, overrides, all_overrides[i - 1]):
            above = rp.ablation[i - 1].name
            print(f"[reproduce] row {row.name}: the same training as row {above}: its run", flush=True)
            scored[i], same_as[i] = scored[i - 1], i - 1
            continue
        if row.eval_only:
            scored[i] = row_stage(rp, work, row.name, [*overrides, "eval.interpolate=[1.0]"])
            scored[i - 1] = unmixed_metrics(scored[i], row.name)
        else:
            scored[i] = row_stage(rp, work, row.name, overrides)
    rows = []
    for i, (row, overrides) in enumerate(zip(rp.ablation, all_overrides, strict=True)):
        metrics = scored[i]
        rows.append(
            {
                "name": row.name,
                "label": row.label,
                "overrides": overrides,
                "metrics": {k: metrics.get(k) for k in ("finetuned", "baseline", "delta", "wall_time_s")},
                "train_pairs_used": metrics["training"]["sizes"]["train_pairs_used"],
                **({"shared_run": rp.ablation[i + 1].name} if metrics.get("wall_time_s") is None else {}),
                **({"same_as": rp.ablation[same_as[i]].name} if i in same_as else {}),
            }
        )
    final_dir = work / "rows" / rows[-1]["name"]
    clock = time.perf_counter()
    own = own_corpus_stage(rp, work, final_dir / "model")
    own_s = time.perf_counter() - clock
    final = {"own_corpus": own, "distractors": rows[-1]["metrics"]}
    merged = merge_stage(rp, work, final_dir / "model")
    teacher = teacher_stage(rp, work, all_overrides[-1])
    sweep_pairs, objectives = sweep_facts(settings.paths.root_dir, rp.sweep.config)
    results = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        # compute time of all stages, resumes included: the sweep's span, each row's run, the last evaluation
        "wall_time_s": round(
            summary["wall_time_s"] + sum(r["metrics"].get("wall_time_s") or 0 for r in rows) + own_s, 1
        ),
        "this_invocation_s": round(time.time() - started, 1),
        "n_boot": int(rp.test.n_boot),
        "budget_pairs": rows[-1]["train_pairs_used"],
        "budget_all": rp.budget_pairs is None,
        "sweep_pairs": sweep_pairs,
        "objectives": objectives,
        "mrr_metric": str(rp.targets.mrr_metric),
        "sweep": {
            k: summary.get(k)
            for k in (
                "study_name",
                "n_trials",
                "states",
                "best_trial",
                "best_values",
                "best_params",
                "promotion",
                "wall_time_s",
                "trials",
            )
        },
        "final": {k: {m: v[m] for m in ("finetuned", "baseline", "delta")} for k, v in final.items()},
        "targets": report.targets(final["distractors"], rp.targets),
        "ablation": rows,
        **({"merge": merged} if merged else {}),
        **({"teacher": teacher} if teacher else {}),
        "importances": importances(study),
    }
    results["figures"] = report.collect_figures(work / "sweep", final_dir, out / "figures")
    print(report.write_results(results, out, Path(rp.readme), Path(rp.recipe) if rp.recipe else None), flush=True)
    return results
