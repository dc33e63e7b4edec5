"""Jitted train and eval steps per model family, and the lax.scan that fuses them."""
