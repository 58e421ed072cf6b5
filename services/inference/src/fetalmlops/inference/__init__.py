"""FetalMLOps inference service: KServe predictor for fetal standard-plane classification."""
