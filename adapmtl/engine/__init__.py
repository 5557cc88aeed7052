"""The training engine: config, loop, checkpoints, distributed, evaluation, logging, run folders."""
from adapmtl.engine.config import Config, ConfigError, load_config
from adapmtl.engine.rundir import RunDir, RunDirError
from adapmtl.engine.trainer import NonFiniteLossError, resume, run_dir_of, train

__all__ = ["Config", "ConfigError", "NonFiniteLossError", "RunDir", "RunDirError", "load_config", "resume",
           "run_dir_of", "train"]
