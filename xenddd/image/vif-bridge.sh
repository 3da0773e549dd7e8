# (no interpreter line: the builder writes it, naming the image's busybox)
# /etc/xen/scripts/vif-bridge of a driver domain booted from `xenddd image build`: what Xen's script of
# that name does for a guest's vif in a driver domain, as `xl devd` runs it (`online` or `offline`,
# XENBUS_PATH and vif in the environment), in a busybox shell with three processes where Xen's bash
# script starts about thirty. Under emulation each process costs a driver domain that has just booted
# a noticeable share of a second, and Xen's script took 5 to 40 s there (libxl kills it at 40 s and the
# device is lost): that is the guest's outage. So the steps the kernel offers in sysfs (the up flag, the
# MTU) are writes of this shell, and the rest is busybox's `ip` (a fork of this shell, with no exec; an
# exec of iproute2's loads eight shared libraries; the test bed timed 60 to 200 ms an exec). Same contract: the vif (renamed to `vifname` if the
# backend has one) gets the MAC fe:ff:ff:ff:ff:ff, no address, the MTU of the backend's `mtu` node or
# else of the bridge (also written to the frontend's `mtu`, which libxl gives the backend to write),
# joins the bridge the backend names (or the first one) and comes up; then `connected` goes to
# hotplug-status, or a failure to hotplug-error and hotplug-status `error`. Xen's iptables rules need
# iptables, which the image does not carry (Xen's script skips them then too); hooks in
# /etc/xen/scripts/vif-post.d run as in Xen's. The backend's nodes are the driver domain's own, written
# by dom0's toolstack; a name, number or path in them that is not one is refused all the same. Each
# device brought online is logged with the uptime it took (xen-hotplug.log has no timestamps).
# XENDDD_DD_ROOT (tests only) puts /sys, /var/log/xen, /etc/xen and /usr/bin/busybox under another
# directory.

read -r started _ < /proc/uptime
root=${XENDDD_DD_ROOT:-}
sys=$root/sys
ip() {  # busybox's own applet, which Debian's busybox runs in a fork of this shell with no exec
  if [ -z "$root" ]; then command ip "$@"; else "$root/usr/bin/busybox" ip "$@"; fi
}
exec 2>> "$root/var/log/xen/xen-hotplug.log"
command=${1:-}
[ $# -gt 0 ] && shift
for arg; do case $arg in type_if=*) type_if=${arg#type_if=} ;; esac; done
type_if=${type_if:-vif}

fatal() {
  echo "$0 $command: $*" >&2
  xenstore-write "$XENBUS_PATH/hotplug-error" "$*" "$XENBUS_PATH/hotplug-status" error
  exit 1
}
name_ok() { case $1 in "" | *[!A-Za-z0-9_.-]*) return 1 ;; esac; [ ${#1} -le 15 ]; }

case $command in
  online | offline) [ "$type_if" = vif ] || exit 0 ;;
  add | remove) exit 0 ;;  # a device model's tap interface: dom0's, never a driver domain's
  *) echo "$0: invalid command: $command" >&2; exit 1 ;;
esac
[ -n "${XENBUS_PATH:-}" ] || { echo "$0: XENBUS_PATH is not set" >&2; exit 1; }
name_ok "${vif:-}" || fatal "bad vif name: ${vif:-}"
# the backend's own nodes in one request (-f: whole paths, values never cut at 80 columns)
bridge=; vifname=; mtu=; frontend=
nodes=$(xenstore-ls -f "$XENBUS_PATH") || fatal "cannot read $XENBUS_PATH"
while IFS= read -r line; do
  key=${line%% = \"*}
  case $key in "$XENBUS_PATH"/*/* | "$line") continue ;; esac  # deeper, or not `key = "value"`
  value=${line#* = \"}; value=${value%\"}
  case ${key##*/} in
    bridge) bridge=$value ;;
    vifname) vifname=$value ;;
    mtu) mtu=$value ;;
    frontend) frontend=$value ;;
  esac
done << NODES
$nodes
NODES
if [ "$command" = online ]; then  # where the MTU goes at the end: checked before anything changes
  guest=${frontend#/local/domain/}; guest=${guest%%/*}; devid=${frontend##*/}
  case $guest:$devid in *[!0-9:]* | :* | *:) fatal "bad frontend path: $frontend" ;; esac
  [ "$frontend" = "/local/domain/$guest/device/vif/$devid" ] || fatal "bad frontend path: $frontend"
fi

dev=$vif
if [ -n "$vifname" ]; then
  name_ok "$vifname" || fatal "bad vifname: $vifname"
  if [ "$command" = online ]; then
    [ -e "$sys/class/net/$vifname" ] &&
      fatal "Cannot rename interface $vif. An interface with name $vifname already exists."
    ip link set dev "$vif" name "$vifname" || fatal "cannot rename $vif to $vifname"
  fi
  dev=$vifname
fi
if [ -z "$bridge" ]; then
  for found in "$sys"/class/net/*/bridge; do
    [ -e "$found" ] && { bridge=${found%/bridge}; bridge=${bridge##*/}; break; }
  done
  [ -n "$bridge" ] || fatal "Could not find bridge, and none was specified"
elif [ ! -e "$sys/class/net/$bridge" ] && [ -z "${bridge##xenbr*}" ] &&
  [ -e "$sys/class/net/eth${bridge#xenbr}/bridge" ]; then
  bridge=eth${bridge#xenbr}  # Xen's old name for a bridge, translated as Xen's script does
fi
name_ok "$bridge" && [ -e "$sys/class/net/$bridge" ] || fatal "Could not find bridge device $bridge"

if [ "$command" = offline ]; then
  ip link set dev "$dev" down nomaster > /dev/null 2>&1
else
  [ -n "$mtu" ] || read -r mtu < "$sys/class/net/$bridge/mtu"
  case $mtu in "" | *[!0-9]*) fatal "bad MTU: $mtu" ;; esac
  # a MAC, an address flush or an MTU refused is tolerated, as Xen's script tolerates it; what must
  # hold is checked afterwards: the interface up, on the bridge
  # A vif found up (a device brought online again) goes down, and its addresses go; one netback has
  # just made was never up, and nothing in the image gives a down interface an address: no flush (an
  # exec, a noticeable share of a second under emulation)
  flags=0
  read -r flags < "$sys/class/net/$dev/flags" 2> /dev/null
  if [ $((flags & 1)) = 1 ]; then
    printf '0x%x\n' $((flags & ~1)) > "$sys/class/net/$dev/flags"
    ip address flush dev "$dev"
  fi
  echo "$mtu" > "$sys/class/net/$dev/mtu"
  # busybox's `ip link set` changes the MAC first and stops at a refusal: then again without it
  said=$(ip link set dev "$dev" address fe:ff:ff:ff:ff:ff master "$bridge" up 2>&1) ||
    said=$(ip link set dev "$dev" master "$bridge" up 2>&1)
  read -r flags < "$sys/class/net/$dev/flags" 2> /dev/null
  [ -e "$sys/class/net/$bridge/brif/$dev" ] && [ $((flags & 1)) = 1 ] ||
    fatal "$dev is not up on bridge $bridge: $said"
fi
for hook in "$root"/etc/xen/scripts/vif-post.d/*.hook; do [ -x "$hook" ] && . "$hook"; done
[ "$command" = online ] || exit 0
xenstore-write "$frontend/mtu" "$mtu" "$XENBUS_PATH/hotplug-status" connected ||
  fatal "cannot write $frontend/mtu and hotplug-status"
read -r ended _ < /proc/uptime
echo "$0 online: $dev up on bridge $bridge with MTU $mtu, connected (uptime $started to $ended s)" >&2
