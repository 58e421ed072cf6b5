"""FetalMLOps ingest service: PACS to the raw zone (Kafka, STOW-RS, C-STORE, REST)."""
