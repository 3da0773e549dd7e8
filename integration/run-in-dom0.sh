#!/bin/bash
# Runs inside the Xen dom0 of the test bed (started by integration/image/xenddd-it-run): installs xenddd
# as an operator would, from the Debian package the host built (dist/, scripts/build-deb) with apt (every
# package it depends on or recommends is in the image: dom0 has no network), runs this machine variant's
# scenarios with pytest, and collects the logs. XENDDD_IT_MACHINE names the variant (pc, vtd);
# XENDDD_IT_RESULTS is where results go.
set -u
H=/mnt/host
M=${XENDDD_IT_MACHINE:-pc}
R=${XENDDD_IT_RESULTS:-$H/integration/results/$M}
export XENDDD_IT_MACHINE=$M XENDDD_IT_RESULTS=$R PYTHONDONTWRITEBYTECODE=1
say() { echo "XENDDD-IT: $*" > /dev/console; }
# a line a minute on the console while this runs, so that a silent one means a test bed that hung (the
# host kills it after XENDDD_IT_SILENCE), not a scenario waiting long; not a marker (lower case)
( while sleep 60; do read -r up _ < /proc/uptime; echo "xenddd-it: alive uptime=$up" > /dev/console; done ) &
heartbeat=$!
trap 'kill "$heartbeat"' EXIT
mkdir -p "$R"
deb=$(ls "$H"/dist/xenddd_*_all.deb)
DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" || { say "apt could not install $deb"; exit 1; }
install -m 0644 "$H/integration/scenarios/xenddd-$M.toml" /etc/xenddd/xenddd.toml
select=$(cat "$R/select" 2>/dev/null)
case "$select" in  # scenario (g) brings the disks domstore serves to its guests (see that file)
  *faithful*) cat "$H/integration/scenarios/xenddd-$M-faithful.toml" >> /etc/xenddd/xenddd.toml ;;
esac
# The driver domains boot the image `xenddd image build` made (dd_image.py) unless XENDDD_IT_DD_IMAGE=legacy
# or a scenario needs the legacy one: (g)'s block-dummy files must outlive a crash of domstore (its root
# disk keeps them), (j) compares the two images itself
dd_image=$(cat "$R/dd-image" 2>/dev/null)
case "$select" in *faithful* | *image_ab*) dd_image=legacy ;; esac
if [ "$dd_image" = product ]; then
  python3 "$H/integration/scenarios/dd_image.py" /etc/xenddd/xenddd.toml
  say "driver domains boot the product image /boot/xenddd-dd"
else
  say "driver domains boot the legacy image (root disk, init=xenddd-it-dd)"
fi
systemctl daemon-reload
say "xenddd installed; scenarios for machine $M start"
# the domains' consoles, copied once a minute while the scenarios run: a boot killed at the host's
# deadline never reaches the collection below
( while sleep 60; do mkdir -p "$R/consoles-live" && cp -u /var/log/xen/console/*.log "$R/consoles-live/"; done ) \
  > /dev/null 2>&1 &
copier=$!
python3 -m pytest -v -p no:cacheprovider ${select:+-k "$select"} --rootdir="$H/integration/scenarios" \
  -c "$H/integration/scenarios/pytest.ini" --junitxml="$R/junit.xml" "$H/integration/scenarios"
rc=$?
kill "$copier"
say "scenarios done rc=$rc"
xl dmesg > "$R/xl-dmesg.txt" 2>&1
journalctl -u xenddd --no-pager -o short-precise > "$R/xenddd-journal.txt" 2>&1
journalctl -b --no-pager | tail -300 > "$R/journal-tail.txt" 2>&1
cp -r /var/log/libvirt "$R/libvirt-logs" 2>/dev/null
cp -r /var/log/xen "$R/xen-logs" 2>/dev/null
cp -r /var/lib/xenddd "$R/xenddd-state" 2>/dev/null
# the driver domains' own logs (xl devd, hotplug scripts) from their root disks, once they are gone
systemctl stop xenddd
for domain in $(xl list | awk 'NR > 2 { print $1 }'); do xl destroy "$domain"; done
for disk in vdb vdc; do
  mkdir -p "/mnt/$disk" && mount -o ro,noload "/dev/$disk" "/mnt/$disk" 2>/dev/null || continue
  cp -r "/mnt/$disk/var/log/xen" "$R/dd-logs-$disk" 2>/dev/null
  umount "/mnt/$disk"
done
exit $rc
