#!/bin/bash
# The seed's examples/unit test: clean the cache, start a manager and a generator in the
# background, fetch one sample, then stop the background processes (by their pids) and exit with
# the loader's status.  Uses config.yaml here; set WIREHEAD_MONGO_URI to use your own server.
#   cd examples/unit && ./test.sh
cd "$(dirname "$0")" || exit 1
PY="${PYTHON:-python}"

pids=()
stop_children() {
    local pid waited
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
}
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$PY" clean.py || exit 1

"$PY" manager.py &
pids+=($!)

"$PY" generator.py &
pids+=($!)

"$PY" loader.py
status=$?
exit "$status"
