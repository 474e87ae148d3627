#!/bin/bash
# Submit the three jobs of this example in order: the MongoDB server, then the generators and the
# training job once the server job has started (they wait for its address file themselves).
#   cd examples/slurm && ./submit.sh [sbatch options for every job]
# CHANGE: nothing here.  The #SBATCH lines of the .sbatch files hold the cluster's settings; override
# them without editing any file:
#   * options given to ./submit.sh go to every job:       ./submit.sh --partition=gpu --account=lab
#   * one job's options:  MONGODB_SBATCH_ARGS, GENERATORS_SBATCH_ARGS, TRAIN_SBATCH_ARGS
#                         (GENERATORS_SBATCH_ARGS="--array=0-7 --gres=gpu:2" ./submit.sh)
#   * sbatch's own variables work too (SBATCH_PARTITION=gpu SBATCH_ACCOUNT=lab ./submit.sh)
#   * every variable of the .sbatch files (WIREHEAD_SHARED, CONFIG, TRAIN_ARGS, MONGO_PORT, ...) can be
#     exported before submitting: jobs inherit the environment of sbatch.
# Prints the job ids and the line that stops everything: the training and generator jobs first, the
# server once they have ended.
set -euo pipefail
cd "$(dirname "$0")"
read -r -a mongodb_args <<< "${MONGODB_SBATCH_ARGS:-}"
read -r -a generators_args <<< "${GENERATORS_SBATCH_ARGS:-}"
read -r -a train_args <<< "${TRAIN_SBATCH_ARGS:-}"
mongo_job="$(sbatch --parsable "$@" "${mongodb_args[@]}" mongodb.sbatch)"
mongo_job="${mongo_job%%;*}"
gen_job="$(sbatch --parsable --dependency="after:$mongo_job" "$@" "${generators_args[@]}" generators.sbatch)"
train_job="$(sbatch --parsable --dependency="after:$mongo_job" "$@" "${train_args[@]}" train.sbatch)"
echo "submitted: mongodb $mongo_job, generators ${gen_job%%;*}, train ${train_job%%;*}"
# the server last: a generator caught mid-commit by a server that is gone would retry for RETRY_DEADLINE
workers="${train_job%%;*},${gen_job%%;*}"
echo "stop everything with: scancel ${workers/,/ } && while [ -n \"\$(squeue -h -j $workers 2>/dev/null)\" ]; do sleep 2; done && scancel $mongo_job"
