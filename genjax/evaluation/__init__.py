"""Numbers, not pictures: likelihood bounds (and, later, FID and precision/recall)."""
