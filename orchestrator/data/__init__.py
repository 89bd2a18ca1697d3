"""Preference pairs: the canonical schema (a label per objective), the dataset adapters
(PKU-SafeRLHF, jsonl files), the built-in task with its exact scorers, and how pairs become
token batches. Imports config/ (the data section) and below."""
