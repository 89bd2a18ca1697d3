"""Preference pairs: the canonical schema (a label per objective), the dataset adapters
(PKU-SafeRLHF, HelpSteer2, jsonl files; rows.py reads every hub or file source), the built-in task
with its exact scorers, and how pairs become token batches. Imports config/ (the data section) and
below."""
