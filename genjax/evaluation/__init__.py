"""Numbers, not pictures: likelihood bounds, FID and improved precision/recall."""
