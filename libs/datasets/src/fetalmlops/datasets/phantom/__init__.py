"""A seeded synthetic fetal-ultrasound phantom: six planes, scanner profiles, DICOM with PHI."""
