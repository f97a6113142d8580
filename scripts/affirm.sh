#!/usr/bin/env bash
# Affirm one event on an Ops Portal with curl: for cron jobs and shell scripts.
# Usage: scripts/affirm.sh URL KEY NAME [DATA]
#   URL   the portal, e.g. https://ops.example.com
#   KEY   an API key with the affirmations:write scope
#   NAME  the event name; DATA: any text (optional)
# Exit code 0 when stored; curl's (non-zero) otherwise, with one line on stderr.
# Timeouts, 5xx and 429 answers are retried twice; a refusal (4xx) is not.
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  echo "usage: $0 URL KEY NAME [DATA]" >&2
  exit 2
fi
url=${1%/}
key=$2
name=$3
data=${4-}

# A JSON string for any text: backslashes and quotes escaped, control characters
# as \n, \r, \t or \u00XX (a shell argument cannot hold NUL).
json_string() {
  local s=$1 code ch
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  for code in {1..31}; do
    case $code in 9 | 10 | 13) continue ;; esac
    printf -v ch "\\$(printf '%03o' "$code")"
    s=${s//"$ch"/$(printf '\\u%04x' "$code")}
  done
  printf '"%s"' "$s"
}

body="{\"name\": $(json_string "$name"), \"data\": $(json_string "$data")}"

# The key goes in a header read from stdin, not on curl's command line (ps).
answer=$(
  printf 'X-Api-Key: %s\n' "$key" | curl --silent --show-error --fail \
    --max-time 10 --retry 2 --retry-max-time 30 \
    -H @- -H "Content-Type: application/json" \
    --data-binary "$body" \
    "$url/api/v1/affirmations/affirm/"
) || {
  status=$?
  echo "affirm.sh: affirming '$name' failed (curl exit $status)" >&2
  exit "$status"
}
echo "affirmed '$name': $answer"
