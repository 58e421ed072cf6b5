"""The real local stack without containers: Kafka (KRaft), MinIO, PostgreSQL on loopback."""
