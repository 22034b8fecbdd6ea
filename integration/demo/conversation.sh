# Sourced by the demo scripts: `stamp NAME` prefixes each line of an agent's output
# with the time it was printed, and `conversation FILE...` merges such files in time order.

# Each line of an agent's output gets the time it was printed (ns), so that the output
# of two agents running at once can be shown as one conversation, in time order. Lines
# printed together (a safety number, its QR code) share the time of their first line,
# so they stay together.
stamp() { # name
  local line t rest=""
  while IFS= read -r line; do
    line="$rest$line"
    rest=""
    t=$(date +%s%N)
    printf '%s   %-5s | %s\n' "$t" "$1" "$line"
    # What is already in the pipe came with it. A read that times out keeps the part of
    # a line it got: that part starts the next line.
    while :; do
      if IFS= read -r -t 0.003 line; then
        printf '%s   %-5s | %s\n' "$t" "$1" "$line"
      elif [ $? -gt 128 ]; then
        rest=$line
        break
      else
        [ -n "$line" ] && printf '%s   %-5s | %s\n' "$t" "$1" "$line"
        return 0
      fi
    done
  done
  if [ -n "$rest" ]; then printf '%s   %-5s | %s\n' "$(date +%s%N)" "$1" "$rest"; fi
}
# Prints the stamped files as one conversation, in time order, without the stamps.
conversation() { # file...
  sort -m -s -n -k1,1 "$@" | cut -d' ' -f2-
}

