"""Reward functions that judge responses: Hugging Face reward models (the built-in task's exact
scorers live with the task, implicit rewards with SIPO's judges)."""
