"""Training one adapter: the trainer every method uses, the engine (one process, DDP, DeepSpeed
ZeRO), checkpoints, metrics logs, model selection during training, and one rank's whole run
(loop.py). Knows torch.distributed, never Ray."""
