"""The steerable model: the SVD-LoRA layer and its injection, adapter files (save, load, merge,
export), batched generation with a λ per row, loading a base model, the tiny built-in model, and
the model a run config describes. Imports data/, config/, objectives/ and below."""
