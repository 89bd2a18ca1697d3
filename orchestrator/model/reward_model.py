"""Per-objective reward models as Hugging Face sequence classifiers: a (prompt, response) row gets
one scalar reward per objective, read at its last token.

  shared         one backbone with one scalar head per objective (num_labels = m), the heads
                 named by the objectives (config.id2label), saved in one folder
  per objective  one model per objective (num_labels = 1), each in a subfolder named by it

The backbone trains in full or through LoRA adapters (peft; the heads train in full), merged
into its weights when saved. Either way `save_pretrained` writes them and
`AutoModelForSequenceClassification.from_pretrained` reads them back, here or anywhere else;
reward_model.json records the layout and objectives.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from orchestrator.errors import MoaError
from orchestrator.model.loading import DTYPES, resolve_model_path

REWARD_MODEL = "reward_model"  # a reward run's folder of its trained model
LAYOUT = "reward_model.json"


class RewardModel(nn.Module):
    """Rewards [rows, m] of the objectives, from one backbone with m heads or from m models."""

    def __init__(self, models: dict[str, nn.Module], objectives: list[str]):
        super().__init__()
        self.objectives = list(objectives)
        self.models = nn.ModuleDict(models)
        self.shared = list(models) == ["shared"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.models["shared"](input_ids=input_ids, attention_mask=attention_mask).logits
        columns = [
            self.models[name](input_ids=input_ids, attention_mask=attention_mask).logits
            for name in self.objectives
        ]
        return torch.cat(columns, dim=-1)

    def merge_lora(self) -> None:
        """Fold LoRA-trained members' adapters into their weights: plain models again."""
        for name, member in self.models.items():
            if hasattr(member, "merge_and_unload"):
                self.models[name] = member.merge_and_unload()


def build_reward_model(
    base: str,
    objectives: list[str],
    per_objective: bool,
    pad_token_id: int,
    dtype: str,
    lora_rank: int | None = None,
    lora_alpha: float = 16.0,
) -> RewardModel:
    """New reward heads on the causal LM `base` (hub id, folder or built-in name); with
    `lora_rank`, LoRA adapters on the backbone's linear layers are what trains (and the heads)."""
    path = resolve_model_path(base)

    def classifier(names: list[str]) -> nn.Module:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={name: i for i, name in enumerate(names)},
                pad_token_id=pad_token_id,
                dtype=DTYPES[dtype],
            )
        except (OSError, ValueError) as err:
            raise MoaError(
                f"model.name_or_path: no sequence classifier from {base!r}: {err}"
            ) from err
        model.config.pad_token_id = pad_token_id  # the last non-pad token carries the reward
        if lora_rank is None:
            return model
        from peft import LoraConfig, get_peft_model  # here: importing peft costs ~2.5 s

        lora = LoraConfig(
            task_type="SEQ_CLS", r=lora_rank, lora_alpha=lora_alpha, target_modules="all-linear"
        )
        with warnings.catch_warnings():  # peft's own use of a deprecated transformers call
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            return get_peft_model(model, lora)  # the heads train in full (modules_to_save)

    if per_objective:
        return RewardModel({name: classifier([name]) for name in objectives}, objectives)
    return RewardModel({"shared": classifier(objectives)}, objectives)


def save_reward_model(model: RewardModel, tokenizer, directory: Path) -> None:
    """`save_pretrained` of the model(s) and the tokenizer, with reward_model.json; LoRA
    adapters are merged into `model`'s weights first (model.merge_lora)."""
    model.merge_lora()
    directory.mkdir(parents=True, exist_ok=True)
    for name, member in model.models.items():
        folder = directory if model.shared else directory / name
        member.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    layout = {"objectives": model.objectives, "per_objective": not model.shared}
    (directory / LAYOUT).write_text(json.dumps(layout, indent=2))


def load_reward_model(directory: str | Path, dtype: str = "float32") -> RewardModel:
    """A reward model save_reward_model wrote, through `from_pretrained`."""
    directory = Path(directory)
    layout_file = directory / LAYOUT
    if not layout_file.is_file():
        raise MoaError(f"{directory} is not a reward model folder: {LAYOUT} is missing")
    layout = json.loads(layout_file.read_text())
    objectives = layout["objectives"]
    names = objectives if layout["per_objective"] else ["shared"]
    models = {
        name: AutoModelForSequenceClassification.from_pretrained(
            directory / name if layout["per_objective"] else directory, dtype=DTYPES[dtype]
        )
        for name in names
    }
    return RewardModel(models, objectives)
