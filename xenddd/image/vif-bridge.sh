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
# `uevent`: run by the image's `mdev -d` (dd-init.sh) for the interface netback makes as a vif's backend
# reaches InitWait (ACTION=add, MDEV=vifD.N, IFINDEX), it brings that device online about two seconds
# before `xl devd` would start this script (devd first waits on the backend's state through xenstore,
# then forks): most of a recovered guest's wait in a driver domain under emulation. Only a backend that
# names this script; one naming another is left to `xl devd`. The two runs for one interface agree
# through a claim file named by its ifindex: whichever comes second does nothing but wait for the
# first's outcome (`xl devd`'s run exits 0 on `connected`, and takes the device over if the first failed
# or died).
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
uevent=
if [ "$command" = uevent ]; then  # from mdev: netback has just made the interface
  [ "${ACTION:-}" = add ] || exit 0
  vif=${MDEV:-}
  case $vif in vif[0-9]*.[0-9]*) ;; *) exit 0 ;; esac
  ids=${vif#vif}
  case ${ids%%.*}${ids#*.}:${XENDDD_DD_DOMID:-x}:${IFINDEX:-x} in *[!0-9:]*) exit 0 ;; esac
  XENBUS_PATH=/local/domain/$XENDDD_DD_DOMID/backend/vif/${ids%%.*}/${ids#*.}
  command=online uevent=" (uevent)"
fi
claims=$root/run/xen-hotplug
mine=

fatal() {
  echo "$0 $command$uevent: $*" >&2
  [ -z "$mine" ] || echo error > "$mine"
  xenstore-write "$XENBUS_PATH/hotplug-error" "$*" "$XENBUS_PATH/hotplug-status" error
  exit 1
}
name_ok() { case $1 in "" | *[!A-Za-z0-9_.-]*) return 1 ;; esac; [ ${#1} -le 15 ]; }
forget_claims() {  # $1: the claim this run keeps, if any
  for old in "$claims/$claim_id".*; do [ -e "$old" ] && [ "$old" != "${1:-}" ] && rm -f "$old"; done
}
claim() {  # $1: the ifindex of netback's interface; true if this run has the device to itself
  mine=$claims/$claim_id.$1
  forget_claims "$mine"  # of interfaces made for this backend path before, all gone since
  set -C
  { echo $$ > "$mine"; } 2> /dev/null
  got=$?
  set +C
  return $got
}

case $command in
  online | offline) [ "$type_if" = vif ] || exit 0 ;;
  add | remove) exit 0 ;;  # a device model's tap interface: dom0's, never a driver domain's
  *) echo "$0: invalid command: $command" >&2; exit 1 ;;
esac
[ -n "${XENBUS_PATH:-}" ] || { echo "$0: XENBUS_PATH is not set" >&2; exit 1; }
name_ok "${vif:-}" || fatal "bad vif name: ${vif:-}"
claim_id=${XENBUS_PATH##*backend/vif/}  # (xl devd gives the path relative to this domain's home)
claim_id=vif-bridge.${claim_id%%/*}.${claim_id#*/}
brought_online() {  # $1: the interface, $2: its ifindex; true (and said) if a uevent run did the work
  said=
  [ -e "$claims/$claim_id.$2" ] && read -r said < "$claims/$claim_id.$2"
  [ "$said" = connected ] || return 1
  echo "$0 online: $1 brought online by its uevent run" >&2
}
# xl devd's run after a uevent run that is done: nothing to read (the common case, and the cheap one)
if [ -z "$uevent" ] && [ "$command" = online ] && [ -e "$sys/class/net/$vif/ifindex" ] &&
  read -r ifindex < "$sys/class/net/$vif/ifindex" && brought_online "$vif" "$ifindex"; then
  exit 0
fi
# the backend's own nodes in one request (-f: whole paths, values never cut at 80 columns)
bridge=; vifname=; mtu=; frontend=; script=
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
    script) script=$value ;;
  esac
done << NODES
$nodes
NODES
if [ "$command" = online ]; then  # where the MTU goes at the end: checked before anything changes
  guest=${frontend#/local/domain/}; guest=${guest%%/*}; devid=${frontend##*/}
  case $guest:$devid in *[!0-9:]* | :* | *:) fatal "bad frontend path: $frontend" ;; esac
  [ "$frontend" = "/local/domain/$guest/device/vif/$devid" ] || fatal "bad frontend path: $frontend"
fi
if [ -n "$uevent" ]; then
  [ "${script##*/}" = vif-bridge ] || exit 0  # the backend names another script: xl devd runs that one
  claim "$IFINDEX" || exit 0                  # xl devd's run of this script has the device
elif [ "$command" = online ]; then
  dev=$vif
  [ -e "$sys/class/net/$vif" ] || [ -z "$vifname" ] || dev=$vifname  # renamed by a uevent run
  ifindex=
  [ -e "$sys/class/net/$dev/ifindex" ] && read -r ifindex < "$sys/class/net/$dev/ifindex"
  if [ -n "$ifindex" ] && ! claim "$ifindex"; then
    looks=0
    while [ -e "$mine" ] && [ $looks -lt 150 ]; do  # (30 s: libxl kills this script at 40)
      brought_online "$dev" "$ifindex" && exit 0
      case $said in  # the uevent run's pid while it works (empty while rewritten), then its outcome
        "") ;;
        *[!0-9]*) break ;;                    # it failed: this run tries again
        *) kill -0 "$said" 2> /dev/null || break ;;  # it died
      esac
      sleep 0.2
      looks=$((looks + 1))
    done
    echo $$ > "$mine"
  fi
else
  forget_claims
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
[ -z "$mine" ] || echo connected > "$mine"
read -r ended _ < /proc/uptime
echo "$0 online$uevent: $dev up on bridge $bridge with MTU $mtu, connected (uptime $started to $ended s)" >&2
