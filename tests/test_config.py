"""The settings schema (contrastive/settings.py) on the real composed config, and the CLI's handling of bad values."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, train_settings
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, DictConfig, OmegaConf

import contrastive
from contrastive import settings as schema
from contrastive.cli import config_error_line
from contrastive.data import prepare
from contrastive.errors import ConfigError

GROUPS = ("model", "data", "loss", "batch", "trainer", "eval", "tracking", "paths", "teacher")


def _compose(*overrides: str) -> DictConfig:
    """The real train config with Hydra's own block (for `hydra.runtime.choices`)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(contrastive.CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_default_config_composes_and_passes():
    cfg = _compose()
    assert set(GROUPS) <= set(cfg)
    assert {g: cfg.hydra.runtime.choices[g] for g in ("model", "data", "loss", "batch")} == {
        "model": "minilm",
        "data": "qqp",
        "loss": "mnrl_cosine",
        "batch": "default",
    }
    settings = train_settings()
    assert isinstance(settings, schema.TrainSettings) and isinstance(settings.loss, schema.LossSettings)
    assert settings.loss.aux in schema.AUX_LOSSES and settings.batch.sampler in schema.SAMPLERS
    assert settings.loss.interleave in schema.INTERLEAVE


def test_every_group_yaml_is_checked_by_its_schema():
    for group, cls in schema.GROUP_SCHEMAS.items():
        node = compose_config("train")[group]
        assert OmegaConf.get_type(node) is cls, group


def test_schema_defaults_agree_with_the_yaml():
    """A dataclass default (used when a key is absent) is never a second, different default: the YAML's."""

    def check(cls, node, prefix):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if default is MISSING or default is dataclasses.MISSING:
                continue
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(default):
                check(type(default), value, f"{prefix}{f.name}.")
                continue
            plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            assert plain == default, f"{prefix}{f.name}: YAML {plain!r} vs schema default {default!r}"

    cfg = compose_config("train")
    for group, cls in schema.GROUP_SCHEMAS.items():
        check(cls, cfg[group], f"{group}.")


def test_every_interpolation_but_the_job_dir_resolves(tmp_path):
    cfg = compose_config("train")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] is None  # the job's dir: Hydra's run dir
    root = contrastive.PROJECT_ROOT
    assert resolved["paths"]["root_dir"] == str(root)
    assert Path(resolved["data"]["default_path"]).resolve() == (root.parent / "shared/data/qqp/train.parquet").resolve()
    assert resolved["tracking"]["tracking_uri"].startswith("sqlite:///")


@pytest.mark.parametrize(("group", "expected"), [("qqp", "auto"), ("qqp_local", "local"), ("fixture", "local")])
def test_data_groups_compose(group, expected):
    assert train_settings(f"data={group}").data.source == expected


def test_fixture_config_prepares_the_fixture():
    data = train_settings("data=fixture").data
    assert Path(data.path) == contrastive.PROJECT_ROOT / "tests/fixtures/qqp_fixture.csv"
    prepared = prepare(data)
    assert set(prepared.splits) == {"train", "val", "test"}
    assert prepared.summary["leaked_keys"] == 0
    assert prepared.summary["rows_kept"] == 300


# Range and choice checks: settings' __post_init__, one line `key=value: why`.
BAD = [
    ("model.backend=cuda", "model.backend", "'cuda'"),
    ("model.max_seq_length=0", "model.max_seq_length", "0"),
    ("data.source=ftp", "data.source", "'ftp'"),
    ("data.on_empty=skip", "data.on_empty", "'skip'"),
    ("data.format=xlsx", "data.format", "'xlsx'"),
    ("data.split.group_by=topic", "data.split.group_by", "'topic'"),
    ("data.split.fractions.train=-1", "data.split.fractions.train", "-1.0"),
    ("data.split.fractions.train=0.5", "data.split.fractions", "{'train': 0.5, 'val': 0.1, 'test': 0.1}"),
    ("data.split.fractions={train:1.0,val:0.0,test:0.0}", "data.split.fractions.val", "0.0"),
    ("data.max_pairs=0", "data.max_pairs", "0"),
    ("loss.aux_weight=-1", "loss.aux_weight", "-1.0"),
    ("loss.aux_weight=inf", "loss.aux_weight", "inf"),
    ("loss.aux_weight=1e39", "loss.aux_weight", "1e+39"),  # finite in float64, inf in float32 (torch)
    ("loss.scale=1e39", "loss.scale", "1e+39"),
    ("trainer.lr=-1e39", "trainer.lr", "-1e+39"),
    ("loss.aux_share=0", "loss.aux_share", "0.0"),
    ("loss.aux_share=1.5", "loss.aux_share", "1.5"),
    ("loss.scale=0", "loss.scale", "0.0"),
    ("loss.aux=triplet", "loss.aux", "'triplet'"),
    ("loss.interleave=zigzag", "loss.interleave", "'zigzag'"),
    ("loss.combine=sum", "loss.combine", "'sum'"),
    ("loss.mini_batch_size=0", "loss.mini_batch_size", "0"),
    ("loss.negatives=random", "loss.negatives", "'random'"),
    ("loss.mining.num_negatives=0", "loss.mining.num_negatives", "0"),
    ("loss.mining.range_min=-1", "loss.mining.range_min", "-1"),
    ("loss.mining.range_max=0", "loss.mining.range_max", "0"),
    ("loss.mining.range_min=40", "loss.mining.range_max", "40"),  # the window must hold num_negatives
    ("loss.mining.num_negatives=41", "loss.mining.range_max", "40"),
    ("loss.mining.relative_margin=1", "loss.mining.relative_margin", "1.0"),
    ("loss.mining.relative_margin=-0.1", "loss.mining.relative_margin", "-0.1"),
    ("loss.mining.max_score=1.5", "loss.mining.max_score", "1.5"),
    ("loss.mining.max_score=nan", "loss.mining.max_score", "nan"),
    ("loss.mining.batch_size=0", "loss.mining.batch_size", "0"),
    ("loss.mining.sample_rows=-1", "loss.mining.sample_rows", "-1"),
    ("batch.size=1", "batch.size", "1"),
    ("batch.sampler=shuffle", "batch.sampler", "'shuffle'"),
    ("batch.length_grouping=-1", "batch.length_grouping", "-1"),
    ("batch.num_threads=0", "batch.num_threads", "0"),
    ("batch.num_threads=many", "batch.num_threads", "'many'"),
    ("trainer.lr=0", "trainer.lr", "0.0"),
    ("trainer.lr=-1e-5", "trainer.lr", "-1e-05"),
    ("trainer.max_grad_norm=0", "trainer.max_grad_norm", "0.0"),
    ("trainer.epochs=0", "trainer.epochs", "0.0"),
    ("trainer.warmup_ratio=1", "trainer.warmup_ratio", "1.0"),
    ("trainer.weight_decay=-0.1", "trainer.weight_decay", "-0.1"),
    ("trainer.eval_steps=-1", "trainer.eval_steps", "-1"),
    ("trainer.logging_steps=0", "trainer.logging_steps", "0"),
    ("eval.split=dev", "eval.split", "'dev'"),
    ("eval.objective=mrr", "eval.objective", "'mrr'"),
    ("eval.objective=mrr_at_5", "eval.objective", "'mrr_at_5'"),
    ("eval.map_k=0", "eval.map_k", "0"),
    ("eval.k=0", "eval.k", "0"),
    ("eval.n_boot=-1", "eval.n_boot", "-1"),
    ("eval.ci=1.0", "eval.ci", "1.0"),
    ("eval.distractors=/nonexistent/questions.txt", "eval.distractors", "'/nonexistent/questions.txt'"),
    ("eval.umap.n_neighbors=1", "eval.umap.n_neighbors", "1"),
    ("tracking.tracking_uri=''", "tracking.tracking_uri", "''"),
    ("tracking.tracking_uri=sqlite:////proc/mlruns.db", "tracking.tracking_uri", "'sqlite:////proc/mlruns.db'"),
    ("paths.output_root=/proc/out", "paths.output_root", "'/proc/out'"),
    ("paths.cache_dir=/proc/cache", "paths.cache_dir", "'/proc/cache'"),
]


@pytest.mark.parametrize(("override", "key", "shown"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_a_config_error_naming_key_and_value(override, key, shown):
    with pytest.raises(ConfigError) as err:
        train_settings("loss.negatives=labeled", override)  # mining would name its own cache dir first
    message = str(err.value)
    assert message.startswith(f"{key}={shown}: ")
    assert "\n" not in message


# loss.mnrl and its knobs: each refused value, and each refused combination, in one line naming the key.
BAD_MNRL = [
    (("loss.mnrl=simcse",), "loss.mnrl", "'simcse'"),
    (("loss.mnrl=gist", "loss.cached=true"), "loss.cached", "True"),
    (
        ("loss.mnrl=gist", "loss.directions=[query_to_doc,query_to_query]"),
        "loss.directions",
        "['query_to_doc', 'query_to_query']",
    ),
    (("loss.mnrl=cached_gist", "loss.partition_mode=per_direction"), "loss.partition_mode", "'per_direction'"),
    (("loss.mnrl=gist", "loss.hardness_mode=in_batch_negatives"), "loss.hardness_mode", "'in_batch_negatives'"),
    (("loss.mnrl=gist", "loss.hardness_strength=5"), "loss.hardness_strength", "5.0"),
    (("loss.mnrl=gist", "loss.gist_margin=-0.1"), "loss.gist_margin", "-0.1"),
    (("loss.mnrl=gist", "loss.gist_margin_strategy=percent"), "loss.gist_margin_strategy", "'percent'"),
    (("loss.gist_margin=0.1",), "loss.gist_margin", "0.1"),
    (("loss.gist_margin_strategy=relative",), "loss.gist_margin_strategy", "'relative'"),
    (("loss.gist_contrast_anchors=false",), "loss.gist_contrast_anchors", "False"),
    (("loss.directions=[doc_to_query]",), "loss.directions", "['doc_to_query']"),
    (("loss.directions=[query_to_doc,query_to_doc]",), "loss.directions", "['query_to_doc', 'query_to_doc']"),
    (("loss.directions=[query_to_doc,passage_to_doc]",), "loss.directions", "'passage_to_doc'"),
    (("loss.directions=query_to_doc+q2q",), "loss.directions", "'q2q'"),
    (("loss.directions=[]",), "loss.directions", "[]"),
    (("loss.partition_mode=split",), "loss.partition_mode", "'split'"),
    (
        ("loss.directions=[query_to_doc,doc_to_doc]", "loss.partition_mode=per_direction"),
        "loss.partition_mode",
        "'per_direction'",
    ),
    (("loss.hardness_mode=hardest",), "loss.hardness_mode", "'hardest'"),
    (("loss.hardness_strength=-1",), "loss.hardness_strength", "-1.0"),
    (("loss.hardness_strength=nan",), "loss.hardness_strength", "nan"),
]


@pytest.mark.parametrize(("overrides", "key", "shown"), BAD_MNRL, ids=[" ".join(b[0]) for b in BAD_MNRL])
def test_bad_mnrl_kind_or_knob_is_one_config_error_line(overrides, key, shown):
    with pytest.raises(ConfigError) as err:
        train_settings(*overrides)
    message = str(err.value)
    assert message.startswith(f"{key}={shown}: ") and "\n" not in message


def test_cached_with_gist_points_to_cached_gist():
    with pytest.raises(ConfigError, match="set loss.mnrl=cached_gist"):
        train_settings("loss.mnrl=gist", "loss.cached=true")


@pytest.mark.parametrize(
    "overrides",
    [
        ("loss.mnrl=gist",),
        ("loss.mnrl=cached_gist",),
        ("loss.mnrl=cached_gist", "loss.cached=true"),
        ("loss.mnrl=gist", "loss.gist_margin=0.2", "loss.gist_margin_strategy=relative"),
        ("loss.mnrl=gist", "loss.gist_contrast_anchors=false", "loss.gist_contrast_positives=false"),
        ("loss.directions=[query_to_doc,query_to_query,doc_to_query,doc_to_doc]",),
        ("loss.directions=query_to_doc+doc_to_query", "loss.partition_mode=per_direction"),
        ("loss.cached=true", "loss.hardness_mode=hard_negatives", "loss.hardness_strength=5"),
        ("loss.hardness_mode=all_negatives", "loss.hardness_strength=0"),
    ],
)
def test_mnrl_kinds_and_knobs_accepted(overrides):
    loss = train_settings(*overrides).loss
    assert loss.direction_names[0] == "query_to_doc"


# Type mistakes: the schema refuses them while composing (before any work); the CLI makes them one line.
BAD_TYPES = [
    ("loss.aux_weight=abc", "loss.aux_weight", "abc"),
    ("loss.hard_negatives=maybe", "loss.hard_negatives", "maybe"),
    ("loss.mini_batch_size=true", "loss.mini_batch_size", "True"),
    ("loss.mining.num_negatives=1.5", "loss.mining.num_negatives", "1.5"),
    ("loss.mining.relative_margin=wide", "loss.mining.relative_margin", "wide"),
    ("batch.size=8.5", "batch.size", "8.5"),
    ("trainer.max_steps=1.5", "trainer.max_steps", "1.5"),
    ("trainer.max_steps=false", "trainer.max_steps", "False"),
    ("eval.k=true", "eval.k", "True"),
    ("model.max_seq_length=long", "model.max_seq_length", "long"),
    ("data.split.seed=x", "data.split.seed", "x"),
    ("tracking.enabled=perhaps", "tracking.enabled", "perhaps"),
    ("paths.cache_dir=null", "paths.cache_dir", "null"),
]


@pytest.mark.parametrize(("override", "key", "value"), BAD_TYPES, ids=[b[0] for b in BAD_TYPES])
def test_wrong_type_fails_composition_naming_key_and_value(override, key, value):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", override)
    line = config_error_line(err.value)
    assert line.startswith(f"{key}: ") and value in line and "\n" not in line


def test_unknown_keys_and_options_fail_composition():
    for override in ("loss.aux_wieght=0.3", "data=nope", "eval=nope"):
        with pytest.raises(ConfigCompositionException) as err:
            compose_config("train", override)
        assert "\n" not in config_error_line(err.value)
    with pytest.raises(ConfigError, match="loss.extra"):  # `+` adds a key; the schema refuses it at load
        train_settings("+loss.extra=1")


@pytest.mark.parametrize(
    "override",
    [
        "loss.aux_weight=0",
        "batch.size=2",
        "data.max_pairs=1000",
        "trainer.max_steps=5",
        "trainer.warmup_ratio=0",
        "eval.n_boot=0",
        "loss.aux=cosent",
        "loss.aux=online_contrastive",
        "batch.sampler=random",
        "batch.sampler=no_duplicates",
        "loss.interleave=round_robin",
        "loss.combine=joint",
        "loss.cached=1",  # OmegaConf reads 1 as true
        "batch.num_threads=auto",
        "batch.num_threads=2",
        "eval.objective=[mrr_at_10,pair_ap]",
        "eval.distractors=train",
        "loss.negatives=mined",
        "loss.negatives=both",
        "loss.mining.relative_margin=null",
        "loss.mining.relative_margin=0",
        "loss.mining.max_score=0.9",
        "loss.mining.sample_rows=0",
        "loss.mining.range_min=39",
    ],
)
def test_edge_values_are_accepted(override):
    train_settings(override)


def test_output_paths_are_checked_writable_at_startup(tmp_path):
    from contrastive.settings import load_evaluate

    with pytest.raises(ConfigError, match=r"^json='/proc/out.json': cannot write there"):
        load_evaluate(compose_config("evaluate", "checkpoint=x", "json=/proc/out.json"))
    deep = tmp_path / "a" / "b" / "out.json"  # missing directories are fine: they are created on write
    assert load_evaluate(compose_config("evaluate", "checkpoint=x", f"json={deep}")).json == str(deep)
    train_settings(f"tracking.tracking_uri=sqlite:///{tmp_path}/new/mlruns.db", f"paths.output_root={tmp_path}/o")
    assert not (tmp_path / "new").exists()  # checking leaves nothing behind


def test_mining_cache_dir_is_checked_only_when_mining(tmp_path):
    with pytest.raises(ConfigError, match=r"^loss.mining.cache_dir='/proc/m': cannot write there"):
        train_settings("loss.negatives=mined", "loss.mining.cache_dir=/proc/m")
    train_settings("loss.negatives=labeled", "loss.mining.cache_dir=/proc/m")  # nothing is mined, nothing written
    assert train_settings(f"paths.cache_dir={tmp_path}").loss.mining.cache_dir == f"{tmp_path}/mining"


def test_gist_takes_one_negative_column():
    for overrides in (["loss.negatives=both"], ["loss.negatives=mined", "loss.mining.num_negatives=2"]):
        with pytest.raises(ConfigError, match=r"^loss.mnrl='gist': GISTEmbedLoss takes one negative column"):
            train_settings("loss.mnrl=gist", *overrides)
        train_settings("loss.mnrl=cached_gist", *overrides)
        train_settings("loss.mnrl=gist", "loss.hard_negatives=false", *overrides)  # no explicit negatives at all
    train_settings("loss.mnrl=gist", "loss.negatives=mined")


def test_settings_keep_types():
    s = train_settings("trainer.epochs=2", "loss.aux_weight=1")
    assert s.trainer.epochs == 2.0 and isinstance(s.loss.aux_weight, float)
    assert s.eval.objective_names == ["mrr_at_10"]
    assert "pair_ap" in s.eval.metric_names and "map_at_100" in s.eval.metric_names


# ---------------------------------------------------------------- the CLI, end to end
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "contrastive.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_cli_prints_the_composed_config(tmp_path):
    done = _cli("--cfg", "job", "loss.aux_weight=0.7", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = OmegaConf.create(done.stdout)
    assert set(GROUPS) <= set(printed)
    assert printed.loss.aux_weight == 0.7
    assert printed.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_cli_help_lists_the_groups_the_sweeps_and_where_the_comments_are(tmp_path):
    """`--help` is conf/hydra/help/train.yaml: each group with its options (default starred) and the comment of its
    defaults line, the ready sweeps (`+sweeps=NAME`, from sweeps/), and where every key's comment lives."""
    done = _cli("--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    groups = done.stdout.split("== Config groups")[1].split("\n", 1)[1].split("==")[0]
    rows = {line.split()[0]: line for line in groups.splitlines() if line.strip()}
    assert list(rows) == list(GROUPS)  # conf/train.yaml's order; the schemas' `schema` group is not an option
    assert "fixture, qqp*, qqp_local" in rows["data"]
    assert "mnrl_cosine*" in rows["loss"] and "aux_weight * auxiliary pair loss" in rows["loss"]
    sweeps = done.stdout.split("== Ready sweeps")[1].split("\n", 1)[1].split("==")[0]
    for path in (contrastive.PROJECT_ROOT / "sweeps").glob("*.yaml"):
        assert f"+sweeps={path.stem} " in sweeps, path.stem
    assert "python -m contrastive.train -m +sweeps=fixture_tiny paths.output_root=" in sweeps
    assert "conf/<group>/<option>.yaml" in done.stdout and 'README.md "Config groups"' in done.stdout
    assert "loss:\n  scale: 20.0" in done.stdout  # the composed config follows


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss.aux_weight=-1"], "loss.aux_weight=-1.0: must be >= 0"),
        (["eval.objective=mrr"], "eval.objective='mrr': choose one of"),
        (["loss.aux_weight=abc"], "loss.aux_weight: Value 'abc'"),
        (["loss.aux_wieght=0.3"], "Could not override 'loss.aux_wieght'"),
        (["data=nope"], "Could not find 'data/nope' (choose one of fixture, qqp, qqp_local)"),
        (["data=qqp_local", "data.path=/nonexistent.parquet"], "data.path: file not found: /nonexistent.parquet"),
    ],
)
def test_cli_user_error_is_one_line_without_traceback(tmp_path, overrides, expected):
    done = _cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}", "tracking.enabled=false", tmp_path=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert lines == [lines[0]] and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    if "data.path" not in expected:  # config mistakes stop before any data is read or model loaded
        assert "data summary" not in done.stdout and not (tmp_path / "run" / "config.yaml").exists()


def test_help_lists_come_from_the_files():
    """The `--help` pages' lists (contrastive/help.py): each entry point's own groups, the sweeps' first sentences."""
    from contrastive.help import first_sentence, resolve

    def groups(name: str) -> list[str]:
        return [line.split()[0] for line in resolve("groups", name).splitlines()]

    assert groups("evaluate") == ["model", "data", "eval", "paths"]
    assert groups("app") == ["model", "data", "paths"]
    assert "+sweeps=fixture_tiny " in resolve("sweeps")
    text = "# @package _global_\n# Costs $5. More.\n#   python -m x\n"
    assert first_sentence(text) == "Costs $5"


# ---------------------------------------------------------------- weight interpolation (WiSE-FT)
BAD_INTERPOLATION = [
    ("model.interpolate=2.5", "model.interpolate", "2.5"),
    ("model.interpolate=-0.1", "model.interpolate", "-0.1"),
    ("model.interpolate=nan", "model.interpolate", "nan"),
    ("model.interpolate=inf", "model.interpolate", "inf"),
    ("eval.interpolate=[0.5,2.5]", "eval.interpolate[1]", "2.5"),
    ("eval.interpolate=[-1]", "eval.interpolate[0]", "-1.0"),
    ("eval.interpolate=[nan]", "eval.interpolate[0]", "nan"),
    ("eval.interpolate=[0.5,0.5]", "eval.interpolate", "[0.5, 0.5]"),
]


@pytest.mark.parametrize(("override", "key", "shown"), BAD_INTERPOLATION, ids=[b[0] for b in BAD_INTERPOLATION])
def test_interpolation_alphas_outside_0_2_are_refused_in_one_line(override, key, shown):
    with pytest.raises(ConfigError) as err:
        train_settings(override)
    message = str(err.value)
    assert message.startswith(f"{key}={shown}: ")
    assert ("[0, 2]" if key != "eval.interpolate" else "values repeat") in message
    assert "\n" not in message


def test_interpolation_may_extrapolate_past_the_tuned_model():
    """alpha > 1 is task arithmetic along the fine-tuning direction (θ0 + α·τ), bounded by settings.MAX_ALPHA."""
    settings = train_settings("model.interpolate=1.5", "eval.interpolate=[1.0,1.5,2.0]")
    assert settings.model.interpolate == 1.5 and list(settings.eval.interpolate) == [1.0, 1.5, 2.0]


@pytest.mark.parametrize("override", ["model.interpolate=abc", "eval.interpolate=[abc]", "eval.interpolate=0.5"])
def test_interpolation_wrong_types_fail_composition(override):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", override)
    line = config_error_line(err.value)
    assert line.startswith("model.interpolate" if "model" in override else "eval.interpolate") and "\n" not in line


def test_interpolation_edge_values_are_accepted():
    assert train_settings().model.interpolate is None and train_settings().eval.interpolate == []
    s = train_settings("model.interpolate=0", "eval.interpolate=[0,0.25,1]")
    assert s.model.interpolate == 0.0 and isinstance(s.model.interpolate, float)
    assert s.eval.interpolate == [0.0, 0.25, 1.0]
    assert train_settings("model.interpolate=1", "model.interpolate=null").model.interpolate is None


def test_evaluate_interpolation_needs_torch_weights():
    from contrastive.settings import load_evaluate

    cfg = compose_config("evaluate", "checkpoint=x", "eval.interpolate=[0.5]", "model.backend=onnx")
    with pytest.raises(ConfigError, match=r"^model.backend='onnx': eval.interpolate mixes torch weights"):
        load_evaluate(cfg)
    assert load_evaluate(compose_config("evaluate", "checkpoint=x", "eval.interpolate=[0.5]")).eval.interpolate == [0.5]


def test_a_teacher_filter_of_1_drops_nothing_and_reads_as_no_filter():
    """teacher_max=1 keeps every candidate: the same settings as null (no teacher, no scoring, the same run)."""
    one = train_settings("loss.mining.teacher_max=1.0")
    assert one.loss.mining.teacher_max is None and one == train_settings()
    assert train_settings("loss.mining.teacher_max=0.6").loss.mining.teacher_max == 0.6
