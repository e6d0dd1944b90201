"""Training engine: `TrainConfig` and `train(cfg) -> run_dir` (single process or torchrun DDP).

Components (torchtitan-style, apart from the model): config, schedule, optim, distributed,
state (checkpoints), metrics, plot.
"""

from bdh.train.config import TrainConfig, read_config_file
from bdh.train.loop import TrainingDiverged, TrainingInterrupted, resume_config, train

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "read_config_file",
    "resume_config",
    "train",
]
