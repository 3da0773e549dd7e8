# (no interpreter line: the builder writes it, naming the image's busybox)
# /etc/xen/scripts/block of a driver domain booted from `xenddd image build`, for the disks it serves that
# are its own block devices (`phy:` targets such as /dev/xvdb, a disk dom0 gives it): what Xen's script
# does for them, as `xl devd` runs it (`add` or `remove`, XENBUS_PATH in the environment), in a busybox
# shell with four processes where Xen's bash script starts about twenty, each a noticeable share of a
# second in a driver domain under emulation (Xen's took 2.6 s there, beside the guest's outage). Anything
# else (a file, a device of another type, another command) is Xen's own script's, kept as `block.xen`.
#
# The Debian package installs the same script for dom0 as /usr/libexec/xenddd/block, which a driver
# domain's own disk names (`script` in its [[driver_domain.disk]]): there it hands anything else to
# /etc/xen/scripts/block (`xen_block`, set on the line the package puts first). dom0's is the path a
# promoted storage standby's data disk waits on: Xen's script took 5.8-7.5 s there under emulation.
#
# One difference, on purpose: a target under /dev that does not exist yet is waited for, up to
# XENDDD_BLOCK_WAIT seconds (20; libxl gives a hotplug script 40). A promoted storage standby is given
# its disk by dom0 while the guests' disks it serves are attached to it, and each is served as soon as
# the disk appears; the image says it does so (data/feature-block-wait, written by its init). Xen's
# script, given a target that is not there, reports success without a device, and the guest's disk
# never connects; here it fails with the reason, as for a target that is not a block device.
#
# Same contract otherwise: a backend that has its physical-device already is left alone; the target is
# refused if it is mounted in this domain (read-write, or at all for a writable disk), or served by
# another backend of this domain to another guest, writable on either side (`!` in the mode skips these
# checks), under Xen's `block` lock; then physical-device (major:minor in hex), physical-device-path and
# hotplug-status connected, in one write. `remove` of such a target has nothing to undo. The backend's
# nodes are written by dom0's toolstack; a mode, path or domid in them that is not one is refused all the
# same. XENDDD_DD_ROOT (tests only) puts /proc, /var/log/xen, /run and /etc/xen under another directory.

read -r started _ < /proc/uptime
root=${XENDDD_DD_ROOT:-}
exec 2>> "$root/var/log/xen/xen-hotplug.log"
command=${1:-}
xen_script() { exec "${xen_block:-$root/etc/xen/scripts/block.xen}" "$command"; }
fatal() {
  echo "$0 $command: $*" >&2
  xenstore-write "$XENBUS_PATH/hotplug-error" "$*" "$XENBUS_PATH/hotplug-status" error
  exit 1
}

case $command in add | remove) ;; *) xen_script ;; esac
[ -n "${XENBUS_PATH:-}" ] || xen_script
base=${XENBUS_BASE_PATH:-backend}/${XENBUS_TYPE:-vbd}
me=${XENBUS_PATH#*backend/*/}  # FRONTEND-DOMID/DEVID
case $me in ?*/?*) ;; *) me= ;; esac
case $me in "" | *[!0-9/]* | */*/*) fatal "bad backend path: $XENBUS_PATH" ;; esac

# every backend of this kind in this domain, in one request: this device's nodes and the others' targets
# (-f: whole paths, values never cut at 80 columns)
nodes=$(xenstore-ls -f "$base") || fatal "cannot read $base"
params=; mode=; type=; physical=; others=
while IFS= read -r line; do
  key=${line%% = \"*}
  [ "$key" != "$line" ] || continue
  value=${line#* = \"}; value=${value%\"}
  node=${key##*/}; device=${key%/*}; device=${device#"$base"/}; device=${device#*/"$base"/}
  case $device in */*/* | */ | /* | *[!0-9/]* | "") continue ;; */*) ;; *) continue ;; esac
  if [ "$device" = "$me" ]; then
    case $node in
      params) params=$value ;;
      mode) mode=$value ;;
      type) type=$value ;;
      physical-device) physical=$value ;;
    esac
  elif [ "$node" = physical-device ] || [ "$node" = mode ]; then
    others="$others$device $node $value
"
  fi
done << NODES
$nodes
NODES

case $params in /*) dev=$params ;; "") xen_script ;; *) dev=/dev/$params ;; esac
[ "$type" = phy ] || xen_script
case $dev in /dev/*) ;; *) xen_script ;; esac
if [ "$command" = remove ]; then
  [ -b "$root$dev" ] || [ ! -e "$root$dev" ] || xen_script
  exit 0  # a device of this domain's: nothing to undo
fi
[ -z "$physical" ] || exit 0
lockdir=$root/var/lock/xen-hotplug  # Xen's locking.sh: $XEN_LOCK_DIR/xen-hotplug
[ -d "$lockdir" ] || mkdir -p "$lockdir"
limit=${XENDDD_BLOCK_WAIT:-20}
case $limit in "" | *[!0-9]*) limit=20 ;; esac
if [ ! -e "$root$dev" ]; then
  # looked for every 0.1 s without a process per look (busybox's `sleep` is one, and dom0 needs the
  # CPUs meanwhile to give the domain the disk): a read that times out on a FIFO nobody writes to
  fifo=$lockdir/block-wait
  [ -p "$fifo" ] || mkfifo "$fifo" 2> /dev/null || [ -p "$fifo" ] || fatal "cannot make $fifo"
  exec 8<> "$fifo"
  now=$started
  while [ ! -e "$root$dev" ] && [ $((${now%.*} - ${started%.*})) -lt "$limit" ]; do
    read -r -t 0.1 -u 8 _
    read -r now _ < /proc/uptime
  done
  exec 8<&-
fi
[ -e "$root$dev" ] || fatal "$dev does not exist (waited $limit s)"
if [ -L "$root$dev" ]; then  # (the path Xen's script writes is the link's target)
  dev=$(readlink -f "$root$dev") || fatal "$dev: a link to nothing"
  dev=${dev#"$root"}
fi
[ -b "$root$dev" ] || xen_script  # a file under /dev: a loop device's, as Xen's script makes it
case $mode in *w*!* | *!*w*) mode='!' ;; *w*) mode=w ;; *) mode=r ;; esac

# Xen's locking.sh: the lock is held once the file locked is still the one at its path (Xen's scripts
# remove it when they release it; this one leaves it, which theirs accept)
lockfile=$lockdir/block
while :; do
  exec 9<> "$lockfile"
  flock -x 9 || fatal "cannot lock $lockfile"
  [ "/proc/$$/fd/9" -ef "$lockfile" ] && break
  exec 9<&-
done
mounted=
while read -r source _ _ options _; do
  [ -b "$root$source" ] || continue
  [ "$mode" = w ] || case ,$options, in *,ro,*) continue ;; esac
  mounted="$mounted $root$source"
done < "$root/proc/mounts"
# one process for the target's major:minor and every mounted block device's
numbers=$(stat -L -c %t:%T "$root$dev" $mounted) || fatal "cannot stat $dev"
target=${numbers%%
*}
in_use=
[ "$target" = "$numbers" ] || for found in ${numbers#*
}; do [ "$found" != "$target" ] || in_use=1; done
if [ "$mode" != '!' ]; then
  [ -z "$in_use" ] || fatal "$dev is mounted in this domain"
  while read -r device node value; do
    [ "$node" = physical-device ] && [ "$value" = "$target" ] || continue
    theirs=
    while read -r other what found; do
      [ "$other $what" != "$device mode" ] || theirs=$found
    done << OTHERS
$others
OTHERS
    # a read-only disk shares with read-only ones (`!`: that one skipped its checks)
    [ "$mode" = w ] || case $theirs in *!*) continue ;; *w*) ;; *) continue ;; esac
    # Xen's same_vm, stub domains aside: a node this domain cannot read counts as the same guest
    mine=$(xenstore-read "/local/domain/${me%/*}/vm" 2> /dev/null) || mine=unknown
    vm=$(xenstore-read "/local/domain/${device%/*}/vm" 2> /dev/null) || vm=$mine
    [ "$mine" = "$vm" ] || fatal "$dev is in use by another guest's disk ($device)"
  done << OTHERS
$others
OTHERS
fi
xenstore-write "$XENBUS_PATH/physical-device" "$target" "$XENBUS_PATH/physical-device-path" "$dev" \
  "$XENBUS_PATH/hotplug-status" connected || fatal "cannot write $XENBUS_PATH"
read -r ended _ < /proc/uptime
echo "$0 add: $dev ($target, mode $mode) connected (uptime $started to $ended s)" >&2
