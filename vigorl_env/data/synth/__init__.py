"""Procedural datasets (SPEC §2.7): no download, deterministic in (dataset_seed, split, index), any size."""
