#!/bin/sh
# Record the sysfs/procfs files the node checks A read, from the CURRENT network namespace,
# into DIR (a small tree for `RecordedHost`): run it inside a lab namespace, e.g.
#   ip netns exec nd1234-h1 sh tests/record_checks_A_tree.sh tests/fixtures/node-trees/NAME
# Only files are copied (sysfs symlinks are resolved); nothing is edited.
set -eu
dest=$1
mkdir -p "$dest/proc/sys/net/ipv4/conf" "$dest/proc/net/stat" "$dest/sys/class/net" "$dest/root"
for f in /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/ip_forward \
         /proc/sys/net/bridge/bridge-nf-call-iptables \
         /proc/sys/net/netfilter/nf_conntrack_max /proc/sys/net/netfilter/nf_conntrack_count \
         /proc/net/stat/nf_conntrack /proc/net/route /proc/net/udp /proc/net/tcp /proc/net/fib_trie; do
  [ -e "$f" ] || continue
  mkdir -p "$dest$(dirname "$f")"
  cat "$f" > "$dest$f"
done
for dev in /sys/class/net/*; do
  name=$(basename "$dev")
  d="$dest/sys/class/net/$name"
  mkdir -p "$d"
  cat "$dev/uevent" > "$d/uevent"
  cat "$dev/flags" > "$d/flags"
  for low in "$dev"/lower_*; do [ -e "$low" ] && mkdir -p "$d/$(basename "$low")"; done
  if [ -d "$dev/brif" ]; then
    mkdir -p "$d/bridge" "$d/brif"
    for port in "$dev"/brif/*; do
      [ -e "$port" ] || continue
      mkdir -p "$d/brif/$(basename "$port")"
      cat "$port/hairpin_mode" > "$d/brif/$(basename "$port")/hairpin_mode"
    done
  fi
done
