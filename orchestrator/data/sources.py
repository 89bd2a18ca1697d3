"""The training pairs a run's data section names, in the canonical schema."""

from orchestrator.config.sections import DataSection
from orchestrator.data import helpsteer2, pku_saferlhf
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.schema import PairDataset


def dataset_name(cfg: DataSection) -> str:
    """How reports name the data: "the built-in task", or its hub id or file."""
    if cfg.source == "assistant":
        return "the built-in task"
    defaults = {"pku_saferlhf": pku_saferlhf.HUB_ID, "helpsteer2": helpsteer2.HUB_ID}
    return cfg.path or defaults[cfg.source]


def load_training_pairs(cfg: DataSection) -> PairDataset:
    return load_pairs(cfg, "train")


def load_pairs(cfg: DataSection, split: str, num_pairs: int | None = None) -> PairDataset:
    """The pairs of `split` (train, validation, test): a file's pairs of the prompts in that
    split, or the built-in task's `num_pairs` (default data.num_pairs) drawn on its prompts."""
    if cfg.source == "assistant":
        task = AssistantTask(seed=cfg.seed)
        count = num_pairs or cfg.num_pairs
        return task.preference_pairs(count, cfg.objectives, cfg.conflict_fraction, split=split)
    if cfg.source == "pku_saferlhf":
        dataset = pku_saferlhf.load_pku_saferlhf(dataset_name(cfg))
    elif cfg.source == "helpsteer2":
        dataset = helpsteer2.load_helpsteer2(
            dataset_name(cfg), tuple(cfg.objectives), attributes=cfg.attributes
        )
    else:
        dataset = PairDataset.load_jsonl(cfg.path)
    selected = dataset.select_objectives(cfg.objectives)
    return selected.split(cfg.validation_fraction, cfg.test_fraction, cfg.seed)[split]
