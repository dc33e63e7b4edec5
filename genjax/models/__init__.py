"""Pure Flax Linen modules: no optax, tfds or wandb in here."""
