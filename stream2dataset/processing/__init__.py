"""Processing: decode and sample frames, detect faces and people, crop, transform, hash."""
