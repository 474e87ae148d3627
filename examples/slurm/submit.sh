#!/bin/bash
# Submit the three jobs of this example in order: MongoDB, then the generators and the training
# job once MongoDB has started (they wait for its address file themselves).
#   cd examples/slurm && ./submit.sh
# CHANGE: nothing here; edit the #SBATCH lines and variables of the .sbatch files.
set -euo pipefail
cd "$(dirname "$0")"
mongo_job="$(sbatch --parsable mongodb.sbatch)"
gen_job="$(sbatch --parsable --dependency="after:${mongo_job%%;*}" generators.sbatch)"
train_job="$(sbatch --parsable --dependency="after:${mongo_job%%;*}" train.sbatch)"
echo "submitted: mongodb ${mongo_job%%;*}, generators ${gen_job%%;*}, train ${train_job%%;*}"
echo "stop everything with: scancel ${train_job%%;*} ${gen_job%%;*} ${mongo_job%%;*}"
