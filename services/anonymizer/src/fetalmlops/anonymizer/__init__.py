"""FetalMLOps anonymizer service: PS3.15 de-identification, burned-in PHI removal for ultrasound."""
