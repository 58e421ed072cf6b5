"""Energy and CO2e measured the one way the project measures them: CodeCarbon, offline,
configured in `tracking`, for the trainer's runs and the inference service's windows alike."""
