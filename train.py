r"""Train a ViT with ToMe: python train.py --config configs/vit_b_tome.py[:args] --workdir DIR.

Resumes from the latest readable checkpoint in --workdir (a local path or gs://bucket/run). SIGTERM
or Ctrl-C saves a checkpoint at the current step and exits 0; run the same command to resume.
Override any field: --config.batch_size=256. --verbose shows INFO logs.
Multi-host (TPU pods, multi-node GPU): add --distributed on every process (jax.distributed
auto-detects TPU/SLURM/Open MPI, or pass --coordinator_address, --num_processes, --process_id).
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the summary go here.", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show INFO logs of JAX, orbax and grain (default: warnings only).")


def main(argv):
    del argv
    from tome_jax import runtime

    runtime.configure(verbose=_VERBOSE.value)  # allocator, quiet logs, compilation cache ($TOME_JAX_CACHE_DIR)
    import jax

    if _DISTRIBUTED.value:
        # CPU collectives between processes (harmless on GPU/TPU, where XLA uses NCCL/ICI).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from tome_jax.train import train_and_evaluate

    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    import sys

    from tome_jax import cli

    # Config mistakes and --help are answered here, before any data, checkpoint or JAX work.
    cli.preflight(sys.argv, __doc__, flags.FLAGS.module_help(sys.modules[__name__]))
    flags.mark_flag_as_required("config")
    app.run(main)
