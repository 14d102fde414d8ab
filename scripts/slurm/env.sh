# Sourced by the sbatch templates (from the repository root, where the job was submitted). Sets:
#   UNLEARNKIT_WANDB_ID  a W&B run id derived from the SLURM job id: a requeued job continues the same run
#   RUN_DIR              the run directory, stable across requeues (default runs/slurm-<job id>); in an array
#                        job a given RUN_DIR must hold %a, the task's index (one directory per task)
#   UNLEARNKIT_CKPT      the newest checkpoint of RUN_DIR to resume from (Lightning's hpc_ckpt_N.ckpt saved on
#                        SIGUSR1, or checkpoints/last.ckpt), empty on a first start
#   UNLEARNKIT_DEVICES   GPUs (= tasks) per node, UNLEARNKIT_NODES nodes: what the trainer must be told
#   UNLEARNKIT_TRAINER   the trainer config (default configs/trainer/ddp.yaml)
# W&B logs offline unless WANDB_MODE=online is exported when submitting (sbatch passes the environment on).

JOB="${SLURM_JOB_ID:?not inside a SLURM job: submit with sbatch}"
if [[ -n "${SLURM_ARRAY_JOB_ID:-}" ]]; then
  JOB="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
fi
export UNLEARNKIT_WANDB_ID="${UNLEARNKIT_WANDB_ID:-slurm-${JOB}}"
if [[ -n "${SLURM_ARRAY_JOB_ID:-}" && -n "${RUN_DIR:-}" ]]; then
  if [[ "${RUN_DIR}" != *%a* ]]; then
    echo "error: RUN_DIR=${RUN_DIR} would be shared by every task of array job ${SLURM_ARRAY_JOB_ID}:" \
      "put %a (the task's index) in it, e.g. RUN_DIR=runs/seed-%a" >&2
    exit 2
  fi
  RUN_DIR="${RUN_DIR//\%a/${SLURM_ARRAY_TASK_ID}}"
fi
RUN_DIR="${RUN_DIR:-runs/slurm-${JOB}}"
UNLEARNKIT_CKPT="$(ls -t "${RUN_DIR}"/hpc_ckpt_*.ckpt "${RUN_DIR}/checkpoints/last.ckpt" 2>/dev/null | head -n 1 || true)"
UNLEARNKIT_DEVICES="${SLURM_NTASKS_PER_NODE:-1}"
UNLEARNKIT_NODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
UNLEARNKIT_TRAINER="${UNLEARNKIT_TRAINER:-configs/trainer/ddp.yaml}"

# the Python environment: a virtual environment in the repository, if there is one (else load your own)
if [[ -f "${UNLEARNKIT_VENV:-.venv}/bin/activate" ]]; then
  # shellcheck disable=SC1091
  source "${UNLEARNKIT_VENV:-.venv}/bin/activate"
fi
