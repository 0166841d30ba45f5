"""Procedural datasets (docs/data.md#procedural-datasets): no download, deterministic in (dataset_seed, split, index), any size."""
