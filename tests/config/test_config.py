from pathlib import Path

import pytest

from orchestrator.config import RunConfig, load_config
from orchestrator.config.sweep_space import count_trials
from orchestrator.errors import MoaError
from orchestrator.recipes.sweep import check_sweep


def test_defaults_are_the_demo():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.model.name_or_path == "builtin:tiny"
    assert cfg.data.objectives == ["helpful", "harmless"]


def test_yaml_file_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "train:\n  beta: 0.2\n  aggregation: tche\ndata:\n  objectives: [helpful, concise]\n"
    )
    cfg = load_config(path, ["train.beta=0.5", "adapter.target_modules=[q_proj, v_proj]"])
    assert cfg.train.beta == 0.5
    assert cfg.train.aggregation == "tche"
    assert cfg.data.objectives == ["helpful", "concise"]
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr=0.1"], "unknown field 'train.lr'"),
        (["trainer.beta=0.1"], "unknown field 'trainer'"),
        (["train.beta=high"], "field 'train.beta'"),
        (["train.learning_rate=-1"], "field 'train.learning_rate': Input should be greater than 0"),
        (["adapter.rank=0"], "field 'adapter.rank'"),
        (["train.aggregation=mean"], "field 'train.aggregation'"),
        (["train.vertex_probability=1.5"], "field 'train.vertex_probability'"),
        (["data.objectives=[helpful, helpful]"], "at least two distinct names"),
        (["data.objectives=[helpful]"], "at least two distinct names"),
        (["model.device=gpu"], "field 'model.device'"),
        (["data.source=jsonl"], "needs data.path"),
        (["train.objective=funny"], "train.objective 'funny' is not one of"),
        (["train.preference=[0.5, 0.6]"], "train.preference: preference weights must sum to 1"),
        (["train.preference=[1.0]"], r"train.preference: preference must have shape \[2\]"),
        (["spo.order=[helpful]"], "spo.order must list each objective"),
        (["spo.order=[helpful, honest]"], "spo.order must list each objective"),
        (["spo.betas=[0.1]"], "spo.betas needs one β per stage"),
        (["spo.margin_weights=[1.0, 1.0]"], "spo.margin_weights needs one weight per stage"),
        (["compare.methods=[]"], "methods must be distinct and not empty"),
        (["compare.methods=[dps, dps]"], "methods must be distinct and not empty"),
        (["compare.methods=[rlhf]"], "field 'compare.methods.0'"),
        (["compare.seeds=[]"], "seeds must be distinct and not empty"),
        (["eval.reference_point=[0, 0, 0]"], "eval.reference_point has 3 values for 2"),
        (["train.beta"], "must look like section.field=value"),
        (
            ["train.max_steps=10", "train.warmup_steps=11"],
            r"train: warmup_steps \(11\) exceeds max_steps \(10\)",
        ),
        (["eval.answers_per_prompt=3"], r"eval: answers_per_prompt \(3\) > 1 needs temperature"),
        (["eval.top_p=0.9"], r"eval: top_p \(0.9\) needs temperature > 0"),
        (["sipo.top_p=0.9"], r"sipo: top_p \(0.9\) needs temperature > 0"),
        (["train.reference=initial"], "train.reference: initial .* needs adapter.init_from"),
        (
            ["scaling.deepspeed.offload_optimizer=true"],
            "scaling.deepspeed is set, but scaling.strategy is ddp",
        ),
        (
            ["scaling.strategy=deepspeed", "scaling.deepspeed.bf16=true"],
            "scaling.deepspeed.bf16 needs scaling.use_gpu: true",
        ),
        (
            ["train.max_steps=50", "eval.every=100"],
            r"eval.every \(100\) exceeds train.max_steps \(50\)",
        ),
        (["train.objective=helpful", "eval.every=10"], "a model trained at one λ .* eval.every: 0"),
        (["train.preference=[0.5, 0.5]", "eval.every=10"], "a model trained at one λ"),
        (
            ["train.preference_per_pair=true", "train.objective=helpful"],
            "preference_per_pair .* excludes preference and objective",
        ),
        (["sipo.realign_at=everywhere"], "field 'sipo.realign_at'"),
    ],
)
def test_bad_config_names_the_field(overrides, message):
    with pytest.raises(MoaError, match=message):
        load_config(None, overrides)


def test_fixed_preference_defaults_to_the_objectives_vertex():
    assert load_config().fixed_preference is None
    assert load_config(None, ["train.objective=harmless"]).fixed_preference == [0.0, 1.0]
    both = load_config(None, ["train.objective=harmless", "train.preference=[0.5, 0.5]"])
    assert both.fixed_preference == [0.5, 0.5]


@pytest.mark.parametrize(("max_steps", "warmup"), [(300, 20), (50, 10), (4, 0)])
def test_warmup_defaults_to_a_fifth_of_a_short_run(max_steps, warmup):
    assert load_config(None, [f"train.max_steps={max_steps}"]).train.warmup == warmup
    given = load_config(None, [f"train.max_steps={max_steps}", f"train.warmup_steps={max_steps}"])
    assert given.train.warmup == max_steps


def test_bad_files(tmp_path):
    with pytest.raises(MoaError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(MoaError, match="mapping of sections"):
        load_config(tmp_path / "list.yaml")


JOBS = Path(__file__).parents[2] / "jobs"


@pytest.mark.parametrize("job", sorted(JOBS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_job_config_loads_into_its_own_folder(job):
    assert load_config(job).output_dir != RunConfig().output_dir


def test_the_tune_job_is_a_valid_sweep_of_9_trials():
    cfg = load_config(JOBS / "tune_tiny.yaml")
    check_sweep(cfg)
    assert count_trials(cfg) == 9
