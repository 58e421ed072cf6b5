"""FetalMLOps datasets: the synthetic fetal-ultrasound phantom and readers for real formats."""
