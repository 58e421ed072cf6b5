"""FetalMLOps trainer service: snapshots, training, evaluation, .mar packaging, model registry."""
