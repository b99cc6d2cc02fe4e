#!/usr/bin/env bash
# Install ward from a built binary: the binary, the systemd unit, a starter
# config in /etc/ward (only if there is none) and the state dir /var/lib/ward.
# Safe to run again (upgrades the binary and the unit, keeps the config).
#
#   packaging/install.sh [--binary PATH] [--prefix DIR] [--root DIR] [--uninstall]
#
#   --binary PATH  the ward binary to install (default: target/release/ward)
#   --prefix DIR   where bin/ward goes (default: /usr/local)
#   --root DIR     install under DIR instead of / (for packaging and tests)
#   --uninstall    remove the binary and the unit; keep /etc/ward and /var/lib/ward
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
binary="$here/../target/release/ward"
prefix=/usr/local
root=""
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --root) root="${2%/}"; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done

bin_dir="$root$prefix/bin"
unit="$root/etc/systemd/system/ward.service"
conf_dir="$root/etc/ward"
state_dir="$root/var/lib/ward"
# Only talk to systemd when installing into the real system it runs.
live_systemd=0
if [ -z "$root" ] && [ -d /run/systemd/system ]; then live_systemd=1; fi

if [ "$uninstall" = 1 ]; then
  if [ "$live_systemd" = 1 ] && [ -f "$unit" ]; then
    systemctl disable --now ward.service || true
  fi
  rm -f "$bin_dir/ward" "$unit"
  if [ "$live_systemd" = 1 ]; then systemctl daemon-reload; fi
  echo "removed $bin_dir/ward and $unit"
  echo "kept $conf_dir and $state_dir (remove them yourself if you no longer need them)"
  exit 0
fi

if [ ! -x "$binary" ]; then
  echo "install.sh: no ward binary at \`$binary\`" >&2
  echo "  hint: run \`cargo build --release\` first, or pass --binary PATH" >&2
  exit 1
fi

install -d -m 0755 "$bin_dir" "$(dirname "$unit")" "$conf_dir"
install -m 0755 "$binary" "$bin_dir/ward.new"
mv -f "$bin_dir/ward.new" "$bin_dir/ward"
echo "installed $bin_dir/ward"

# The unit names the binary by its final path (without --root).
sed "s#^ExecStart=/usr/bin/ward #ExecStart=$prefix/bin/ward #" "$here/ward.service" > "$unit.new"
chmod 0644 "$unit.new"
mv -f "$unit.new" "$unit"
echo "installed $unit"

if [ -e "$conf_dir/supervisor.toml" ]; then
  echo "kept the existing $conf_dir/supervisor.toml"
else
  install -m 0644 "$here/supervisor.toml" "$conf_dir/supervisor.toml"
  echo "installed a starter $conf_dir/supervisor.toml (edit it, then \`ward check -c /etc/ward/supervisor.toml\`)"
fi
install -d -m 0700 "$state_dir"

if [ "$live_systemd" = 1 ]; then
  systemctl daemon-reload
  echo "next: edit /etc/ward/supervisor.toml, then: systemctl enable --now ward"
else
  echo "next: edit the config; on a systemd machine: systemctl daemon-reload && systemctl enable --now ward"
fi
