"""The training pairs a run's data section names, in the canonical schema."""

from orchestrator.config.sections import DataSection
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.pku_saferlhf import load_pku_saferlhf
from orchestrator.data.schema import PairDataset


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
        dataset = load_pku_saferlhf(cfg.path or "PKU-Alignment/PKU-SafeRLHF")
    else:
        dataset = PairDataset.load_jsonl(cfg.path)
    selected = dataset.select_objectives(cfg.objectives)
    return selected.split(cfg.validation_fraction, cfg.test_fraction, cfg.seed)[split]
