#!/bin/sh
# A well-behaved worker: says what it is doing every two seconds, forever.
i=0
trap 'echo "steady: got SIGTERM after $i ticks, exiting cleanly"; exit 0' TERM
while true; do
  i=$((i + 1))
  echo "steady: tick $i (instance ${WARD_INSTANCE:-0})"
  sleep 2 &
  wait $!
done
