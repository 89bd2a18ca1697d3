"""Fixtures shared by several test folders."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Tests never write to ~/.cache and never report Ray usage."""
    os.environ["MOA_CACHE_DIR"] = str(tmp_path_factory.mktemp("moa-cache"))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A tiny Llama base model + BPE tokenizer built by build_tiny_base (hidden 32, 2 layers).

    Built once per session with a 5-step SFT warm-up; single-threaded, since tiny models on a busy
    machine are much faster that way than with several threads competing.
    """
    from orchestrator.model.tiny import TinyBaseConfig, build_tiny_base

    config = TinyBaseConfig(
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        sft_examples=200,
        sft_steps=5,
        batch_size=8,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny-base") / "model"
        return build_tiny_base(out, config, progress=False)
    finally:
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
