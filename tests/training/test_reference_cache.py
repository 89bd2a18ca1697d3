"""π_ref's log-probs are computed once per pairs, base model and batching, and reused: by the next
run's trainer and by the margins' task (distributed/logprobs.py), bit for bit what computing them
again gives; anything they depend on that changes computes them anew."""

import threading
from dataclasses import replace

import pytest
import torch

from orchestrator.algorithms.panacea import reference_logprobs
from orchestrator.config.sections import TrainSection
from orchestrator.data.encoding import encode_pairs
from orchestrator.data.sources import load_training_pairs
from orchestrator.distributed.logprobs import _frozen_logprobs
from orchestrator.model.build import build_model
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import inject_svd_lora
from orchestrator.training import reference_cache
from orchestrator.training import trainer as trainer_module
from orchestrator.training.reference_cache import reference_key
from orchestrator.training.trainer import MultiObjectiveTrainer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / reference_cache.FOLDER


def steerable(tiny_base_dir):
    return inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=32, seed=0)


CFG = TrainSection(batch_size=8, max_steps=1, warmup_steps=0)


def trainer(model, encoded, tokenizer, cfg=CFG, engine=None, count=20):
    return MultiObjectiveTrainer(model, encoded[:count], tokenizer.pad_token_id, cfg, engine)


def computed_references(monkeypatch) -> list:
    """The batches whose reference log-probs the trainer computes, from now on."""
    calls = []

    def counting(model, batch, *args, **kwargs):
        calls.append(batch["signs"].shape[0])
        return reference_logprobs(model, batch, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "reference_logprobs", counting)
    return calls


def test_the_next_trainer_on_the_same_pairs_and_model_takes_them_from_the_cache(
    tiny_base_dir, tokenizer, encoded, own_cache, monkeypatch
):
    first = trainer(steerable(tiny_base_dir), encoded, tokenizer)
    calls = computed_references(monkeypatch)
    first.prepare()
    assert calls == [8, 8, 4] and len(list(own_cache.iterdir())) == 1
    second = trainer(steerable(tiny_base_dir), encoded, tokenizer)
    second.prepare()
    assert calls == [8, 8, 4]  # nothing computed again
    assert torch.equal(second.reference, first.reference)


@pytest.mark.parametrize("change", ["weight", "token", "batch_size", "packing"])
def test_a_change_to_what_they_depend_on_computes_them_anew(
    tiny_base_dir, tokenizer, encoded, change, monkeypatch
):
    first = trainer(steerable(tiny_base_dir), encoded, tokenizer)
    first.prepare()
    model, pairs, cfg = steerable(tiny_base_dir), list(encoded), CFG
    if change == "weight":
        with torch.no_grad():
            model.model.norm.weight[0] += 1e-3
    elif change == "token":
        pairs[3] = replace(pairs[3], response_b=[*pairs[3].response_b[:-2], pairs[3].prompt[0]])
    elif change == "batch_size":
        cfg = CFG.model_copy(update={"batch_size": 4})
    else:
        cfg = CFG.model_copy(update={"packing": False})
    calls = computed_references(monkeypatch)
    again = trainer(model, pairs, tokenizer, cfg)
    again.prepare()
    assert calls  # computed
    if change in ("weight", "token"):
        assert not torch.equal(again.reference, first.reference)
    else:  # the same numbers up to float rounding of another batching
        assert torch.allclose(again.reference, first.reference, atol=1e-5)


def test_the_margins_task_and_training_share_them(tiny_config, tmp_path, own_cache, monkeypatch):
    cfg = tiny_config(tmp_path / "run")
    pairs = load_training_pairs(cfg.data)
    [from_task] = _frozen_logprobs(cfg, pairs, [(None, None)])
    assert len(list(own_cache.iterdir())) == 1
    tokenizer, model = build_model(cfg)
    data = cfg.data
    encoded = encode_pairs(tokenizer, pairs, data.max_prompt_tokens, data.max_response_tokens)
    calls = computed_references(monkeypatch)
    run = MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg.train)
    run.prepare()
    assert calls == [] and torch.equal(run.reference, from_task)
    # And computed afresh (an empty cache), training's own are the task's, bit for bit.
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path / "empty"))
    run = MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg.train)
    run.prepare()
    assert calls and torch.equal(run.reference, from_task)


class ThreadRanks:
    """Data-parallel ranks as threads of this process: all_gather and all_reduce_sum meet at a
    barrier."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list = [None] * world_size

    def engine(self, rank: int, model):
        group = self

        class Engine(trainer_module.LocalEngine):
            def __init__(self):
                super().__init__(model, CFG)
                self.rank, self.world_size = rank, group.world_size

            def all_gather(self, tensor):
                group.slots[rank] = tensor.clone()
                group.barrier.wait()
                parts = list(group.slots)
                group.barrier.wait()
                return parts

            def all_reduce_sum(self, tensor):
                return sum(self.all_gather(tensor))

        return Engine()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_compute_the_batches_one_process_computes(
    tiny_base_dir, tokenizer, encoded, world_size, tmp_path, monkeypatch
):
    """Rank r takes batches r, r + ranks, …: each batch is the one a single process cuts, so the
    gathered log-probs equal one process's bit for bit, whatever the ranks (36 pairs: batches of
    8, 8, 8, 8 and 4, which 2 or 3 ranks share unevenly)."""
    alone = trainer(steerable(tiny_base_dir), encoded, tokenizer, count=36)
    alone.prepare()
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path / "empty"))  # the ranks compute them
    ranks = ThreadRanks(world_size)
    trainers = {}

    def run(rank):
        model = steerable(tiny_base_dir)
        engine = ranks.engine(rank, model)
        trainers[rank] = trainer(model, encoded, tokenizer, engine=engine, count=36)
        trainers[rank].prepare()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(trainers) == list(range(world_size))
    for rank in range(world_size):
        assert torch.equal(trainers[rank].reference, alone.reference)


def test_weights_partitioned_across_ranks_are_never_cached(tiny_base_dir, encoded):
    model = steerable(tiny_base_dir)
    assert reference_key(model, encoded, 8, True, 1024) is not None
    model.model.norm.weight.ds_id = 0  # as ZeRO-3 marks the parameters it partitions
    assert reference_key(model, encoded, 8, True, 1024) is None


def test_the_key_names_what_the_weights_do_not_hold(tiny_base_dir, encoded):
    """Equal weights with another RoPE θ or attention kernel compute other log-probs."""
    model = steerable(tiny_base_dir)
    key = reference_key(model, encoded, 8, True, 1024)
    rope = dict(model.config.rope_parameters)
    model.config.rope_parameters = {**rope, "rope_theta": 2 * rope["rope_theta"]}
    assert reference_key(model, encoded, 8, True, 1024) not in (key, None)
    other = steerable(tiny_base_dir)
    other.config._attn_implementation = "eager"
    assert reference_key(other, encoded, 8, True, 1024) not in (key, None)
