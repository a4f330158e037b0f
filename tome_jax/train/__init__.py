"""Training framework: loop, optimizer, checkpoints, metrics, sharding, evaluation sweeps."""

from tome_jax.train.loop import TrainState, build_model, train_and_evaluate

__all__ = ["TrainState", "build_model", "train_and_evaluate"]
