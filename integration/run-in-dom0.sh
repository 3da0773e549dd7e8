#!/bin/bash
# Runs inside the Xen dom0 of the test bed (started by integration/image/xenddd-it-run): installs the
# checkout's xenddd as an operator would, runs the scenarios with pytest, and collects the logs.
set -u
H=/mnt/host
R=$H/integration/results
export PYTHONDONTWRITEBYTECODE=1
say() { echo "XENDDD-IT: $*" > /dev/console; }
mkdir -p "$R"
bash "$H/scripts/install" --no-apt
install -m 0644 "$H/integration/scenarios/xenddd.toml" /etc/xenddd/xenddd.toml
systemctl daemon-reload
say "xenddd installed; scenarios start"
python3 -m pytest -v -p no:cacheprovider --rootdir="$H/integration/scenarios" \
  -c "$H/integration/scenarios/pytest.ini" --junitxml="$R/junit.xml" "$H/integration/scenarios"
rc=$?
say "scenarios done rc=$rc"
xl dmesg > "$R/xl-dmesg.txt" 2>&1
journalctl -u xenddd --no-pager > "$R/xenddd-journal.txt" 2>&1
journalctl -b --no-pager | tail -300 > "$R/journal-tail.txt" 2>&1
cp -r /var/log/libvirt "$R/libvirt-logs" 2>/dev/null
cp -r /var/log/xen "$R/xen-logs" 2>/dev/null
cp -r /var/lib/xenddd "$R/xenddd-state" 2>/dev/null
exit $rc
