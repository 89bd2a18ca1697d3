"""The tiny base model of the built-in task: a small Llama, a BPE tokenizer and an SFT warm-up.

Built from scratch on the task's corpus, saved with `save_pretrained` and loaded back through the
same `from_pretrained` path a hub model takes. Cached by a hash of its config and of the task's
phrase bank, so it is built once per machine.
"""

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import LlamaConfig, PreTrainedTokenizerFast

from orchestrator.atomic import atomic_directory
from orchestrator.data import assistant_phrases
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import encode_prompt, encode_response, pad_batch
from orchestrator.objectives.losses import sequence_logprobs
from orchestrator.objectives.schedule import warmup_cosine

SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>"}
ROLE_TOKENS = ["<|user|>", "<|assistant|>"]
BUILD_VERSION = 1  # bump when the build recipe changes, so cached bases are rebuilt
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>"
    "{{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyBaseConfig:
    vocab_size: int = 1024
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    intermediate_size: int = 512
    sft_examples: int = 8000
    sft_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0

    def llama_config(self, vocab_size: int | None = None, **token_ids: int) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size or self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=256,
            **token_ids,
        )

    def key(self) -> str:
        phrase_bank = repr({k: v for k, v in vars(assistant_phrases).items() if k.isupper()})
        payload = json.dumps(asdict(self), sort_keys=True) + phrase_bank + str(BUILD_VERSION)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


BUILTIN_BASES = {
    "builtin:tiny": TinyBaseConfig(),
    # For tests and `moa demo --quick`: smaller and warmed up for less long.
    "builtin:tiny-quick": TinyBaseConfig(
        hidden_size=128, num_heads=4, intermediate_size=352, sft_examples=3000, sft_steps=120
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MOA_CACHE_DIR", Path.home() / ".cache" / "moa"))


def ensure_tiny_base(config: TinyBaseConfig | None = None, progress: bool = True) -> Path:
    """The directory of the cached tiny base model, building it first if needed."""
    config = config or TinyBaseConfig()
    path = cache_dir() / f"tiny-base-{config.key()}"
    if not (path / "config.json").is_file():
        build_tiny_base(path, config, progress=progress)
    return path


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    wrapped.add_special_tokens({"additional_special_tokens": ROLE_TOKENS})
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_base(
    out_dir: str | os.PathLike, config: TinyBaseConfig, progress: bool = True
) -> Path:
    with torch.random.fork_rng():  # seeded from its config, without touching the caller's RNG
        torch.manual_seed(config.seed)
        return _build(Path(out_dir), config, progress)


def _build(out_dir: Path, config: TinyBaseConfig, progress: bool) -> Path:
    # Here, not at the top: importing the modeling code costs a process that only needs the
    # tokenizer (a sweep's trial, a driver's checks) 2 s.
    from transformers import LlamaForCausalLM

    task = AssistantTask(seed=config.seed)
    examples = task.sft_examples(config.sft_examples)
    tokenizer = train_tokenizer(
        [text for example in examples for text in example], config.vocab_size
    )
    model = LlamaForCausalLM(
        config.llama_config(
            len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    encoded = [
        (encode_prompt(tokenizer, p, 64), encode_response(tokenizer, r, 128)) for p, r in examples
    ]
    _warm_up(model, encoded, tokenizer.pad_token_id, config, progress)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_base_config.json").write_text(json.dumps(asdict(config), indent=2))
    return out_dir


def _warm_up(model, encoded, pad_id: int, config: TinyBaseConfig, progress: bool) -> None:
    """Supervised fine-tuning on the task's answers (response tokens only), cosine schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    warmup = max(1, config.sft_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, config.sft_steps, final_fraction=0.0)
    )
    rng = random.Random(config.seed)
    model.train()
    bar = tqdm(range(config.sft_steps), desc="tiny base SFT", disable=not progress)
    for _ in bar:
        batch = pad_batch(rng.sample(encoded, config.batch_size), pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps, counts = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
        loss = -logps.sum() / counts.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
