# (no interpreter line: the builder writes it, naming the image's busybox)
# /init of a driver domain booted from `xenddd image build`: no root disk, no udev, no systemd. Loads the
# backends, sets up what the kernel command line asks (xenddd.* words, parsed by parse_words below and
# by its twin xenddd/image/cmdline.py), runs /etc/xenddd-dd/start.d/*, writes the readiness key xenddd
# waits for (data/ready = 1; a storage domain with data/feature-block-wait = 1 beside it, in the same
# write: see block.sh), then starts `xl devd` for Xen's hotplug scripts. Afterwards it
# loads the driver of each PCI device that appears (passed through at boot or hot-plugged) and reports
# the binding on the console, enslaves interfaces to bridges as the words say, and never exits (PID 1).
# A word it cannot parse or a backend module that does not load is reported on the console and in
# data/ready-error, and the domain never claims to be ready; an `xl devd` that does not start takes
# data/ready back and is reported the same way. Restored from
# a save (a new domid, a new home in xenstore), it restarts `xl devd` and writes data/ready again.
# `busybox sh dd-init.sh --print-config` with XENDDD_DD_CMDLINE set only parses (the tests compare it with the twin);
# `--print-port-joins SYS` also says which interfaces of a sysfs tree its port words would enslave;
# `--follow-restores RUN` runs only the answer to restores, with RUN for /run, XENDDD_DD_KINDS for the
# image's kinds and the console on stdout (the tests give it fake commands).

bridges=; ports=; ips=; gateway=; forward=0; modules=; console_logs=0; errors=

bad() { errors="$errors$1; "; }
name_ok() { case $1 in "" | *[!A-Za-z0-9_.-]*) return 1 ;; esac; [ ${#1} -le 15 ]; }
ipv4_ok() {
  case $1 in "" | *[!0-9.]* | *..* | .* | *.) return 1 ;; esac
  old_ifs=$IFS; IFS=.; set -- $1; IFS=$old_ifs
  [ $# -eq 4 ] || return 1
  for octet; do [ ${#octet} -le 3 ] && [ "$octet" -le 255 ] || return 1; done
}
cidr_ok() {
  case $1 in */*) ;; *) return 1 ;; esac
  prefix=${1#*/}
  case $prefix in "" | *[!0-9]*) return 1 ;; esac
  [ ${#prefix} -le 2 ] && [ "$prefix" -le 32 ] && ipv4_ok "${1%/*}"
}
port_ok() {  # BRIDGE,vif | BRIDGE,mac=MAC | BRIDGE,if=NAME | BRIDGE,pci=BDF
  case " $bridges " in *" ${1%%,*} "*) ;; *) return 1 ;; esac
  match=${1#*,}
  case $match in
    vif) return 0 ;;
    mac=*) case ${match#mac=} in
      [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) return 0 ;;
      esac ;;
    if=*) name_ok "${match#if=}" && return 0 ;;
    pci=*) case ${match#pci=} in
      [0-9a-f][0-9a-f][0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-1][0-9a-f].[0-7]) return 0 ;;
      esac ;;
  esac
  return 1
}

parse_words() {  # the xenddd.* words of a kernel command line; others belong to the kernel
  for word in $1; do
    value=${word#*=}
    case $word in
      xenddd.bridge=*) if name_ok "$value"; then bridges="$bridges $value"; else bad "$word"; fi ;;
      xenddd.port=*) if port_ok "$value"; then ports="$ports $value"; else bad "$word"; fi ;;
      xenddd.ip=*)
        if name_ok "${value%%,*}" && cidr_ok "${value#*,}"; then ips="$ips $value"; else bad "$word"; fi ;;
      xenddd.gw=*) if ipv4_ok "$value"; then gateway=$value; else bad "$word"; fi ;;
      xenddd.forward=0 | xenddd.forward=1) forward=$value ;;
      xenddd.modules=*)
        case $value in "" | *[!A-Za-z0-9_,-]* | ,* | *, | *,,*) bad "$word" ;; *) modules="$modules ${value//,/ }" ;; esac ;;
      xenddd.console_logs=0 | xenddd.console_logs=1) console_logs=$value ;;
      xenddd.*) bad "$word" ;;
    esac
  done
}

print_config() {
  for b in $bridges; do echo "bridge $b"; done
  for p in $ports; do echo "port ${p%%,*} ${p#*,}"; done
  for i in $ips; do echo "ip ${i%%,*} ${i#*,}"; done
  [ -n "$gateway" ] && echo "gw $gateway"
  echo "forward $forward"
  for m in $modules; do echo "module $m"; done
  echo "console_logs $console_logs"
}

# The loop at the end runs these every round, netback's interfaces among those they look at: each
# process started there (a readlink, a basename, a command substitution's fork) is a share of a second of
# the domain's one vCPU under emulation, taken from the hotplug scripts of the guests being reattached.
# So they start none: symlinks are resolved by cd -P and files read by `read`, in this shell.
top=$PWD  # where a relative sysfs tree (--print-port-joins) is found again; / for PID 1
link_name() {  # $name: the name of the directory the symlink $1 leads to ("" if none)
  name=
  cd -P "$1" 2> /dev/null && name=${PWD##*/}
  cd "$top" || :
}

port_joins() {  # $joins: "IFACE:BRIDGE" for each interface under $1/class/net a port word asks for, not joined yet
  joins=
  for rule in $ports; do
    bridge=${rule%%,*}
    for net in "$1"/class/net/*; do
      iface=${net##*/}
      [ -e "$net/device" ] && [ ! -e "$net/master" ] || continue
      case ${rule#*,} in
        # the domain's own frontends only: netback's interfaces (vifD.N) are also the "vif" driver's, on
        # the xen-backend bus, and their bridge is the vif script's to set, after it takes them down
        vif)
          link_name "$net/device/driver"; [ "$name" = vif ] || continue
          link_name "$net/device/subsystem"; [ "$name" = xen ] || continue ;;
        mac=*) address=; read -r address < "$net/address"; [ "$address" = "${rule#*,mac=}" ] || continue ;;
        if=*) [ "$iface" = "${rule#*,if=}" ] || continue ;;
        pci=*) link_name "$net/device"; [ "$name" = "${rule#*,pci=}" ] || continue ;;
      esac
      joins="$joins $iface:$bridge"  # a colon is never in an interface's name
    done
  done
}

# A domain saved and restored (`xl save`/`xl restore`, libvirt's virDomainSave/Restore) runs again as
# another domid, with a new home in xenstore: its data/ready is gone, and `xl devd` still watches the
# backends of the domid it read when it started, so the scripts of the guests attached now never run. The
# kernel sets its watches again at resume, a relative one against the new home, and each fires once when
# set: a watch on `domid` sees every restore.
devd_pid=/run/xl-devd.pid
ready() {  # data/ready = 1 in the domain's home, at boot and after each restore
  # a storage domain's `block` script (the image's) waits for a target that is not there yet: xenddd may
  # attach guests' disks to it while dom0 still gives it the disk they are on (a promoted standby)
  features=
  case ,$kinds, in *,block,*) features="data/feature-block-wait 1" ;; esac
  xenstore-write $features data/ready 1
  read -r up _ < /proc/uptime
  say "ready domid=$domid uptime=$up"
}
refuse() { say "cannot start: $*"; xenstore-write data/ready-error "$*"; }
serve() {  # data/ready, then xl devd; if xl devd does not start, the key is taken back and 1 returned.
  # The key first: xl devd's start took seconds of the outage under emulation (a second at boot, 2.3 to
  # 2.6 s after a restore), and taking up a guest's device does not wait for it: the backends listen
  # already (loaded at boot; after a restore the kernel set its watches again before it let user space
  # run), and xl devd runs the script of each backend it finds waiting in InitWait when it starts
  # (libxl's events handler, since Xen 4.8), as it does for those that reach InitWait later
  ready
  xl devd -p "$devd_pid" && return 0
  xenstore-rm data/ready
  return 1
}

follow_restores() {  # for the domain's life, in the background: processes per event, none per round
  xenstore-watch domid | while read -r _; do
    restored=$(xenstore-read domid) || continue
    [ "$restored" = "$domid" ] && continue  # the event of the watch being set at boot
    say "restored as domid $restored (was $domid): restarting xl devd"
    domid=$restored
    old=
    read -r old < "$devd_pid" 2> /dev/null
    # xl writes its pid over the file without truncating it, and a start that fails would leave the old
    # pid for the next restore to signal, maybe another process's by then
    : > "$devd_pid"
    # (if it does not start, the next restore tries again)
    serve || refuse "xl devd did not start after a restore as domid $domid (see /var/log/xen/xldevd.log)"
    # the old one only now, off the path to the new one (on the test bed its end took most of a second)
    stop_devd "$old"
  done
  say "the watch on domid ended: a restore would not be answered"
}
stop_devd() {  # $1: the pid of an xl devd that watches a home no longer ours (another domain's once its
  # domid is given out again), if any
  [ -n "$1" ] && kill "$1" 2> /dev/null || return 0
  rounds=50  # 5 s, then it is killed outright
  while running "$1"; do
    rounds=$((rounds - 1))
    [ $rounds -gt 0 ] || { kill -9 "$1" 2> /dev/null; return 0; }
    sleep 0.1
  done
}
running() {  # $1 (a pid) has not ended. xl devd, a daemon, is PID 1's child, reaped only when PID 1 next
  # waits for a process of its own: ended, it stays a zombie until then, which `kill -0` still finds
  state=
  read -r _ _ state _ < "/proc/$1/stat" 2> /dev/null && [ "$state" != Z ]
}

if [ "${1:-}" = --follow-restores ]; then  # the same watcher, its console on stdout
  say() { echo "xenddd-dd: $*"; }
  devd_pid=$2/xl-devd.pid kinds=${XENDDD_DD_KINDS:-}
  domid=$(xenstore-read domid)
  follow_restores
  exit 0
fi
if [ "${1:-}" = --print-config ]; then
  parse_words "${XENDDD_DD_CMDLINE:-}"
  if [ -n "$errors" ]; then echo "bad: ${errors%; }"; exit 1; fi
  print_config
  exit 0
fi
if [ "${1:-}" = --print-port-joins ]; then  # the same, then what port_joins makes of the sysfs tree at $2
  parse_words "${XENDDD_DD_CMDLINE:-}"
  port_joins "$2"
  for join in $joins; do echo "${join%%:*} ${join#*:}"; done
  exit 0
fi

applets=/usr/libexec/xenddd-dd/applets
/usr/bin/busybox mkdir -p $applets
/usr/bin/busybox --install -s $applets
. /etc/xenddd-dd/image
for applet in $never_applets; do /usr/bin/busybox rm -f "$applets/$applet"; done
export PATH=/usr/sbin:/usr/bin:$applets HOME=/root
say() { echo "xenddd-dd: $*" > /dev/console; }
mark() { read -r up _ < /proc/uptime; say "boot $1 uptime=$up"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs tmp /tmp
mark init
# what udev or systemd would have made: the hotplug scripts' locking stats /dev/stdin
ln -sfn /proc/self/fd /dev/fd
for n in 0:stdin 1:stdout 2:stderr; do ln -sfn "/proc/self/fd/${n%%:*}" "/dev/${n#*:}"; done
mkdir -p /run/lock /run/xen /run/xen-hotplug /var/log/xen
fail() {  # PID 1 must not exit: report, and stay up without ever writing data/ready
  refuse "$*"
  while :; do sleep 3600; done
}
load() {  # the modules a list of the image's names (by path), in the list's order, in one process
  names=
  while read -r module; do module=${module##*/}; names="$names ${module%.ko}"; done < "$1"
  [ -z "$names" ] || modprobe -a $names || fail "cannot load the modules of $1:$names"
}
load /etc/xenddd-dd/modules
mount -t xenfs xenfs /proc/xen || fail "cannot mount xenfs"
mark modules
read -r cmdline < /proc/cmdline
parse_words "$cmdline"
[ -z "$errors" ] || fail "bad xenddd words on the kernel command line: ${errors%; }"
for module in $modules; do modprobe "$module" || say "no module $module in this image"; done
ip link set lo up
for bridge in $bridges; do
  ip link add "$bridge" type bridge stp_state 0 forward_delay 0 2> /dev/null
  ip link set "$bridge" up
done
[ "$forward" = 1 ] && echo 1 > /proc/sys/net/ipv4/ip_forward

configure() {  # addresses, routes and bridge ports for the interfaces present now; again every round
  for entry in $ips; do
    iface=${entry%%,*}
    [ -e "/sys/class/net/$iface" ] || continue
    ip addr show dev "$iface" | grep -q "inet ${entry#*,} " && continue
    ip addr add "${entry#*,}" dev "$iface" && ip link set "$iface" up && say "address ${entry#*,} on $iface"
  done
  if [ -n "$gateway" ] && ! ip route show default | grep -q .; then
    ip route add default via "$gateway" 2> /dev/null && say "default route via $gateway"
  fi
  port_joins /sys
  for join in $joins; do
    iface=${join%%:*} bridge=${join#*:} address=
    ip link set "$iface" master "$bridge" && ip link set "$iface" up || continue
    read -r address < "/sys/class/net/$iface/address"
    say "port $iface mac=$address joined $bridge"
  done
}

configure
for hook in /etc/xenddd-dd/start.d/*; do [ -x "$hook" ] && "$hook"; done
if [ "$console_logs" = 1 ]; then
  touch /var/log/xen/xen-hotplug.log /var/log/xen/xldevd.log
  tail -F /var/log/xen/xen-hotplug.log /var/log/xen/xldevd.log > /dev/console 2>&1 &
fi
domid=$(xenstore-read domid)
serve || fail "xl devd did not start (see /var/log/xen/xldevd.log)"
mark xl-devd
follow_restores &
# each round waits on a FIFO nothing writes, in this shell (a `sleep` would be a process a round)
tick=/run/xenddd-dd.tick
mkfifo "$tick" || say "no $tick: each round waits in a sleep process"
reported=; probed=
while :; do
  for dev in /sys/bus/pci/devices/*; do
    [ -e "$dev/modalias" ] || continue
    pci=${dev##*/}
    if [ ! -e "$dev/driver" ]; then  # its driver loaded once per device: the image's modules do not change
      modalias=; read -r modalias < "$dev/modalias"
      case " $probed " in
        *" $pci=$modalias "*) ;;
        *) probed="$probed $pci=$modalias"; modprobe -q "$modalias" 2> /dev/null ;;
      esac
    fi
    link_name "$dev/driver"
    [ -n "$name" ] || continue
    case " $reported " in *" $pci=$name "*) continue ;; esac
    reported="$reported $pci=$name"
    vendor=; device=; read -r vendor < "$dev/vendor"; read -r device < "$dev/device"
    say "pci $pci vendor=$vendor device=$device driver=$name"
  done
  configure
  if [ -p "$tick" ]; then read -t 2 _ <> "$tick"; else sleep 2; fi
done
