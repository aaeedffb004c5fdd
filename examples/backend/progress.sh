#!/usr/bin/env bash
# A backend job that reports its progress to one browser tab through
# Switchboard's push API, with curl. Stops when the user cancels (409) or
# closes the tab (404).
#
#   examples/backend/progress.sh CLIENT_ID [JOB]
#
# Environment: SWITCHBOARD_URL (default http://127.0.0.1:8080),
# SWITCHBOARD_PUSH_TOKEN (if the server requires one), STEPS (default 10),
# STEP_DELAY in seconds (default 0.5).
# Exit status: 0 done, 2 the browser is gone, 3 cancelled by the user, 1 error.
set -euo pipefail
client=${1:?usage: progress.sh CLIENT_ID [JOB]}
job=${2:-job-$$}
url=${SWITCHBOARD_URL:-http://127.0.0.1:8080}/_/push
steps=${STEPS:-10}
delay=${STEP_DELAY:-0.5}
auth=()
[ -n "${SWITCHBOARD_PUSH_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $SWITCHBOARD_PUSH_TOKEN")

for ((i = 0; i <= steps; i++)); do
  progress=$((i * 100 / steps))
  body=$(printf '{"to":{"client":"%s"},"message":{"job":"%s","progress":%d,"text":"step %d of %d"}}' \
    "$client" "$job" "$progress" "$i" "$steps")
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url" \
    -H 'Content-Type: application/json' "${auth[@]}" --data "$body")
  case $status in
    200) ;;
    404) echo "the browser is gone; stopping job $job at $progress%"; exit 2 ;;
    409) echo "the user cancelled job $job at $progress%"; exit 3 ;;
    *) echo "push failed with HTTP $status" >&2; exit 1 ;;
  esac
  [ "$i" -lt "$steps" ] && sleep "$delay"
done
echo "job $job done"
