#!/bin/sh
# A noisy worker: bursts of numbered lines on stdout and a warning on stderr.
# With the small max_size in supervisor.toml.example its log rotates often.
i=0
while true; do
  j=0
  while [ $j -lt 200 ]; do
    i=$((i + 1)); j=$((j + 1))
    echo "chatty: line $i lorem ipsum dolor sit amet, consectetur adipiscing elit"
  done
  echo "chatty: warning: burst finished at line $i" >&2
  sleep 1
done
