"""Rewards that judge responses: Hugging Face reward models, and a steerable model's own implicit
rewards β(log π_{λ=e_i} − log π_ref) (the built-in task's exact scorers live with the task)."""
