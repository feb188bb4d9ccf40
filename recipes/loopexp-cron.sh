#!/usr/bin/env bash
# Analyse one iteration of an experiment from cron: idempotent, locked, with documented exit codes.
#
# crontab line (every morning at 07:00; the ESP export job drops the events overnight):
#   0 7 * * * /srv/loopexp/recipes/loopexp-cron.sh experiments/spring-newsletter-iter2.yaml \
#       'exports/spring/*.parquet' sends/assignment.parquet >> /srv/loopexp/logs/loopexp.log 2>&1
#
# - The same spec on the same data reports the run already logged (no duplicate MLflow run, the
#   next spec is not rewritten), so the line can run every day until new events arrive.
# - flock -n: if the previous day's run still holds this experiment's lock, today's run is skipped
#   (exit 75) instead of piling up; loopexp also locks the experiment itself (exit 5 when busy).
# - Exit codes: 0 decided, 3 keep testing, 4 invalid split, 1 failure (results kept locally when
#   the tracking server was down: `loopexp upload <folder>`), 2 bad input, 5 busy, 75 skipped.
#
# Settings (environment): LOOPEXP_PROJECT (default: this recipe's repository), LOOPEXP_BIN (default:
# $LOOPEXP_PROJECT/.venv/bin/loopexp), LOOPEXP_TRACKING_URI (default: the project's mlflow.db),
# LOOPEXP_CRON_LOCK_DIR (default: /tmp). Extra arguments are passed on to `loopexp run`.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 SPEC EVENTS ASSIGNMENT [loopexp run options...]" >&2
    exit 2
fi
spec=$1 events=$2 assignment=$3
shift 3

project=${LOOPEXP_PROJECT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
loopexp=${LOOPEXP_BIN:-$project/.venv/bin/loopexp}
tracking_uri=${LOOPEXP_TRACKING_URI:-sqlite:///$project/mlflow.db}
lock=${LOOPEXP_CRON_LOCK_DIR:-/tmp}/loopexp-cron-$(basename "$spec" .yaml).lock

cd "$project"
echo "$(date -u +%FT%TZ) loopexp run $spec"
exec flock -n -E 75 "$lock" \
    "$loopexp" run "$spec" --events "$events" --assignment "$assignment" \
    --tracking-uri "$tracking_uri" "$@"
