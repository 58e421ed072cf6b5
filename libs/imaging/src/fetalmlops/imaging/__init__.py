"""Ultrasound imaging shared by the services that touch pixels (anonymizer, trainer, inference)."""
