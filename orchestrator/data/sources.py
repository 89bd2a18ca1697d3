"""The training pairs a run's data section names, in the canonical schema."""

from orchestrator.config.sections import DataSection
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.pku_saferlhf import load_pku_saferlhf
from orchestrator.data.schema import PairDataset


def load_training_pairs(cfg: DataSection) -> PairDataset:
    if cfg.source == "assistant":
        task = AssistantTask(seed=cfg.seed)
        return task.preference_pairs(cfg.num_pairs, cfg.objectives, cfg.conflict_fraction)
    if cfg.source == "pku_saferlhf":
        dataset = load_pku_saferlhf(cfg.path or "PKU-Alignment/PKU-SafeRLHF")
    else:
        dataset = PairDataset.load_jsonl(cfg.path)
    selected = dataset.select_objectives(cfg.objectives)
    return selected.split(cfg.validation_fraction, cfg.test_fraction, cfg.seed)["train"]
