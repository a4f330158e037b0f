"""Training framework: loop, optimizer, checkpoints, metrics, sharding, evaluation."""

from tome_jax.train.loop import TrainState, build_model, evaluate, train_and_evaluate

__all__ = ["TrainState", "build_model", "evaluate", "train_and_evaluate"]
