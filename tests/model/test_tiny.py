import json
import re
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from orchestrator.data import assistant_phrases
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import prompt_text
from orchestrator.errors import MoaError
from orchestrator.model import loading, tiny
from orchestrator.model.loading import load_model, load_tokenizer, resolve_model_path
from orchestrator.model.tiny import CHAT_TEMPLATE, TinyBaseConfig, ensure_tiny_base

SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
# Smaller still than the shared tiny base: this one is built inside the test module.
QUICK = TinyBaseConfig(
    vocab_size=300,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    sft_examples=40,
    sft_steps=2,
    batch_size=4,
    seed=3,
)


def task_texts(count: int = 12) -> list[str]:
    return [text for pair in AssistantTask(seed=0).sft_examples(count) for text in pair]


# --- the shared tiny base, loaded back through from_pretrained -------------------------------


def test_directory_holds_a_hugging_face_model_and_tokenizer(tiny_base_dir):
    names = {p.name for p in tiny_base_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tiny_base_config.json"} <= names
    assert not any(name.startswith(".") for name in names)
    saved = json.loads((tiny_base_dir / "tiny_base_config.json").read_text())
    assert (saved["hidden_size"], saved["num_layers"], saved["sft_steps"]) == (32, 2, 5)


@pytest.mark.parametrize("via", ["transformers", "orchestrator"])
def test_model_and_tokenizer_load_with_special_tokens_and_template(tiny_base_dir, via):
    if via == "transformers":
        model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    else:
        model, tokenizer = load_model(str(tiny_base_dir)), load_tokenizer(str(tiny_base_dir))
    assert isinstance(model, LlamaForCausalLM)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 2, 64)
    assert config.num_attention_heads == 2
    assert config.vocab_size == len(tokenizer) <= 300
    assert model.dtype == torch.float32
    for attr, token in SPECIAL.items():
        assert getattr(tokenizer, attr) == token
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert prompt_text(tokenizer, "How do I bake bread?") == (
        "<|bos|><|user|>How do I bake bread?\n<|assistant|>"
    )
    for role in ("<|user|>", "<|assistant|>", *SPECIAL.values()):
        assert len(tokenizer(role, add_special_tokens=False)["input_ids"]) == 1, role


def test_load_model_dtype(tiny_base_dir):
    model = load_model(str(tiny_base_dir), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(MoaError, match="dtype must be one of"):
        load_model(str(tiny_base_dir), dtype="float64")


def test_task_texts_round_trip_through_the_tokenizer(tiny_base_dir):
    tokenizer = load_tokenizer(str(tiny_base_dir))
    texts = task_texts()
    assert len(texts) == 24
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # BPE merges were learnt: an answer takes fewer tokens than bytes
    answer = texts[1]
    assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) < 0.9 * len(answer)


# --- a build captured in memory, then reloaded (also the cache of ensure_tiny_base) ----------


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """ensure_tiny_base(QUICK) under a temporary MOA_CACHE_DIR, keeping the in-memory model."""
    cache = tmp_path_factory.mktemp("moa-cache")
    built = SimpleNamespace(cache=cache, calls=0, model=None, tokenizer=None)
    real_build, real_warm_up, real_train_tokenizer = (
        tiny.build_tiny_base,
        tiny._warm_up,
        tiny.train_tokenizer,
    )

    def counting_build(*args, **kwargs):
        built.calls += 1
        return real_build(*args, **kwargs)

    def capturing_warm_up(model, *args, **kwargs):
        built.model = model
        return real_warm_up(model, *args, **kwargs)

    def capturing_train_tokenizer(*args, **kwargs):
        built.tokenizer = real_train_tokenizer(*args, **kwargs)
        return built.tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOA_CACHE_DIR", str(cache))
        mp.setattr(tiny, "build_tiny_base", counting_build)
        mp.setattr(tiny, "_warm_up", capturing_warm_up)
        mp.setattr(tiny, "train_tokenizer", capturing_train_tokenizer)
        built.path = ensure_tiny_base(QUICK, progress=False)
    return built


def test_ensure_tiny_base_builds_into_the_cache(quick_build):
    assert quick_build.calls == 1
    assert quick_build.path == quick_build.cache / f"tiny-base-{QUICK.key()}"
    assert (quick_build.path / "config.json").is_file()
    assert [p.name for p in quick_build.cache.iterdir()] == [quick_build.path.name]


def test_ensure_tiny_base_reuses_the_cache(quick_build, monkeypatch):
    monkeypatch.setenv("MOA_CACHE_DIR", str(quick_build.cache))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached tiny base was built again")

    monkeypatch.setattr(tiny, "build_tiny_base", no_rebuild)
    assert ensure_tiny_base(QUICK, progress=False) == quick_build.path
    assert ensure_tiny_base(TinyBaseConfig(**vars(QUICK)), progress=False) == quick_build.path


def test_reloaded_model_and_tokenizer_equal_the_in_memory_ones(quick_build):
    model = load_model(str(quick_build.path)).eval()
    tokenizer = load_tokenizer(str(quick_build.path))
    in_memory = quick_build.model.eval()
    for text in task_texts(4):
        assert tokenizer(text)["input_ids"] == quick_build.tokenizer(text)["input_ids"]
    ids = torch.tensor([tokenizer(prompt_text(tokenizer, task_texts(1)[0]))["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, in_memory(ids).logits, atol=1e-6, rtol=0)
    state = in_memory.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_warm_up_trains_the_model(quick_build):
    torch.manual_seed(QUICK.seed)
    untrained = LlamaForCausalLM(quick_build.model.config)
    q_name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(untrained.state_dict()[q_name], quick_build.model.state_dict()[q_name])


def test_cache_key_depends_on_the_config_and_the_phrase_bank(monkeypatch):
    assert QUICK.key() == TinyBaseConfig(**vars(QUICK)).key()
    assert len(QUICK.key()) == 12
    keys = {QUICK.key(), TinyBaseConfig().key(), TinyBaseConfig(sft_steps=301).key()}
    assert len(keys) == 3
    before = TinyBaseConfig().key()
    name = next(n for n in vars(assistant_phrases) if n.isupper())
    monkeypatch.setattr(assistant_phrases, name, ["a changed phrase bank"])
    assert TinyBaseConfig().key() != before


def test_cache_dir_follows_moa_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path))
    assert tiny.cache_dir() == tmp_path


def test_builtin_name_resolves_to_the_cached_base_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path))
    config = tiny.BUILTIN_BASES["builtin:tiny-quick"]
    cached = tmp_path / f"tiny-base-{config.key()}"
    cached.mkdir()
    (cached / "config.json").write_text("{}")

    def no_build(*args, **kwargs):
        raise AssertionError("a cached built-in base was built again")

    monkeypatch.setattr(tiny, "build_tiny_base", no_build)
    assert resolve_model_path("builtin:tiny-quick") == str(cached)
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [load_model, load_tokenizer, resolve_model_path])
def test_unknown_builtin_name_raises(load):
    with pytest.raises(MoaError, match=r"unknown built-in model 'builtin:xyz'.*builtin:tiny"):
        load("builtin:xyz")


@pytest.mark.parametrize("load", [load_model, load_tokenizer])
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_loading_from_a_bad_path_raises(tmp_path, load, kind):
    path = tmp_path / kind
    if kind == "empty":
        path.mkdir()
    with pytest.raises(MoaError, match=f"could not load .* from {re.escape(repr(str(path)))}"):
        load(str(path))


def test_load_tokenizer_sets_a_missing_pad_token(tiny_base_dir, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    reloaded = loading.load_tokenizer(str(tmp_path))
    assert reloaded.pad_token == "<|eos|>"
    assert reloaded.pad_token_id == reloaded.eos_token_id
