#!/usr/bin/env bash
# Runs one `bajax train` on every worker of a Cloud TPU VM pod slice (the same command everywhere).
#
#   launch/tpu_pod.sh --tpu NAME --zone ZONE [--project P] [--type v5p-256] \
#       --config configs/lm/7b.py:stage1 --workdir gs://BUCKET/lm7b_s1 [--dry-run] [-- --config.x=y ...]
#
# Every worker runs the identical command: JAX reads the pod layout (coordinator = worker 0, process id =
# worker number) from the TPU metadata (`--cluster tpu`), and each process feeds its own 4 chips with its
# own data shard. The workdir must be on gs:// so all workers share checkpoints and the resumed run finds
# them. Run the same line again after a preemption: training resumes from the latest checkpoint.
# --dry-run prints the exact gcloud command (and the layout) without running it.
set -euo pipefail

TPU="" ZONE="" PROJECT="" TYPE="" CONFIG="" WORKDIR="" DRY_RUN=0
REPO_DIR="${BAJAX_REPO_DIR:-~/bajax}"            # where bajax is checked out and installed on the workers
PYTHON="${BAJAX_PYTHON:-python3}"
EXTRA=()

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu) TPU="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "tpu_pod.sh: unknown argument $1 (extra bajax flags go after --)" >&2; usage ;;
  esac
done

for var in TPU ZONE CONFIG WORKDIR; do
  if [[ -z "${!var}" ]]; then echo "tpu_pod.sh: --${var,,} is required" >&2; usage; fi
done
if [[ "$WORKDIR" != gs://* ]]; then
  echo "tpu_pod.sh: --workdir must be a gs:// path shared by all workers (got $WORKDIR)" >&2; exit 2
fi

# The process layout, for the record: one process per TPU VM host, 4 chips per host. v4/v5p slice names
# count TensorCores (2 per chip), v5e/v6e names count chips.
if [[ -n "$TYPE" ]]; then
  family="${TYPE%-*}"; count="${TYPE##*-}"
  case "$family" in
    v4|v5p) chips=$((count / 2)) ;;
    v5e|v5litepod|v6e) chips=$count ;;
    *) echo "tpu_pod.sh: unknown --type $TYPE (v4-N, v5p-N, v5e-N, v6e-N)" >&2; exit 2 ;;
  esac
  hosts=$(( (chips + 3) / 4 ))
  echo "# layout: $TYPE = $chips chips on $hosts workers; one bajax process per worker ($hosts processes)," \
       "coordinator = worker 0 (from TPU metadata)"
else
  echo "# layout: every worker of $TPU runs one bajax process; coordinator = worker 0 (from TPU metadata)"
fi

# Prints a command so that it can be pasted into a shell: arguments with spaces in single quotes.
show() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%~-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

printf -v extra_q ' %q' "${EXTRA[@]+"${EXTRA[@]}"}"
[[ ${#EXTRA[@]} -eq 0 ]] && extra_q=""
REMOTE="cd $REPO_DIR && $PYTHON -m bajax.cli train --config $CONFIG --workdir $WORKDIR --cluster tpu$extra_q"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE")
[[ -n "$PROJECT" ]] && CMD+=(--project "$PROJECT")
CMD+=(--worker=all --command "$REMOTE")

if [[ "$DRY_RUN" == 1 ]]; then
  show "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
