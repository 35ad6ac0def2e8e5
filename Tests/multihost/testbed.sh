#!/usr/bin/env bash
# A multi-host test bed on one machine: network namespaces as hosts, joined through a
# bridge by veth pairs, each link limited by a token bucket (tc tbf), and mpirun launching
# the ranks into them through an rsh agent with TCP only. Everything it creates is removed
# when it exits, whether the job succeeded, failed or was killed (SIGINT, SIGTERM, SIGHUP).
#
#   testbed.sh [--hosts N] [--ranks-per-host K] [--rate 10gbit|1gbit|none] [--mtu 1500] [--cores LIST;LIST;...]
#              [--timeout SECONDS] [--mca NAME VALUE]... -- PROGRAM [ARGUMENTS...]
#   testbed.sh --check          exit 0 if namespaces can be created here, else say why, exit 77
#   testbed.sh --leftovers      list namespaces, links and processes a test bed left behind
#
# Hosts share one kernel, so each host's processes run under `taskset` with that host's
# cores (--cores "0;1": host 0 on CPU 0, host 1 on CPU 1; default: CPUs dealt out
# round-robin); PROGRAM is expected to keep to its CPU binding (shardwise train --affinity).
# mpirun itself stays in the root namespace, reaching the hosts' daemons over the bridge.
set -uo pipefail

hosts=2; per_host=1; rate=10gbit; mtu=1500; cores=""; timeout=""; mca=()
tag="swtb$$"                        # every name this run creates starts with it
subnet="10.213.$(( $$ % 250 + 1 ))"  # a private /24 per run, so concurrent runs do not meet

die() { echo "testbed: $*" >&2; exit 2; }

leftovers() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep '^swtb' | sed 's/^/namespace /'
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^swtb' | sed 's/^/link /'
}

check() {
    local probe="swtbprobe$$"
    if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then echo "testbed: needs ip and tc (iproute2)"; exit 77; fi
    if ! ip netns add "$probe" 2>/dev/null; then echo "testbed: cannot create network namespaces here (needs root or CAP_SYS_ADMIN)"; exit 77; fi
    ip netns delete "$probe"
    command -v mpirun >/dev/null || { echo "testbed: mpirun is absent (openmpi-bin)"; exit 77; }
    exit 0
}

while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts="$2"; shift 2 ;;
        --ranks-per-host) per_host="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --mtu) mtu="$2"; shift 2 ;;
        --cores) cores="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --mca) mca+=(--mca "$2" "$3"); shift 3 ;;
        --check) check ;;
        --leftovers) leftovers; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option $1 (see the header of $0)" ;;
    esac
done
[ $# -gt 0 ] || die "no program given after --"
[[ "$hosts" =~ ^[1-9][0-9]?$ ]] && [ "$hosts" -le 16 ] || die "--hosts $hosts: expected 1 to 16"
[[ "$per_host" =~ ^[1-9][0-9]?$ ]] || die "--ranks-per-host $per_host: expected a positive count"
[[ "$mtu" =~ ^[0-9]+$ ]] && [ "$mtu" -ge 576 ] && [ "$mtu" -le 65535 ] || die "--mtu $mtu: expected 576 to 65535 (9000: jumbo frames)"

# Each host's CPUs: given, or dealt out round-robin over the CPUs this process may use.
IFS=';' read -r -a host_cores <<< "$cores"
if [ -z "$cores" ]; then
    mapfile -t cpus < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | awk -F- '{ if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1 }')
    host_cores=()
    for ((h = 0; h < hosts; h++)); do
        list=""
        for ((i = h; i < ${#cpus[@]}; i += hosts)); do list="${list:+$list,}${cpus[$i]}"; done
        host_cores+=("${list:-${cpus[$((h % ${#cpus[@]}))]}}")
    done
fi
[ "${#host_cores[@]}" -eq "$hosts" ] || die "--cores \"$cores\": expected $hosts lists separated by ';'"

work=$(mktemp -d "/tmp/$tag.XXXX")
mpirun_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$mpirun_pid" ]; then
        # mpirun (with `timeout`, in its own process group) forwards SIGTERM to the ranks, which
        # checkpoint and exit; give the group 5 s, as the daemons may never answer, then end it.
        kill -TERM -- "-$mpirun_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 -- "-$mpirun_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$mpirun_pid" 2>/dev/null
    fi
    for ((h = 0; h < hosts; h++)); do
        local ns="${tag}h$h"
        # Whatever still runs in the host (a daemon, a rank) goes with it.
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
        ip netns delete "$ns" 2>/dev/null
        ip link delete "${tag}v$h" 2>/dev/null
    done
    ip link delete "${tag}br" 2>/dev/null
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

shape() {  # shape NAMESPACE-OR-EMPTY DEVICE: the link's sending rate
    [ "$rate" = none ] && return 0
    local run=(); [ -n "$1" ] && run=(ip netns exec "$1")
    # A bucket of at least one jiffy's worth of bytes at the rate, so the rate is reachable.
    "${run[@]}" tc qdisc add dev "$2" root tbf rate "$rate" burst 4mb latency 50ms || die "tc tbf rate $rate on $2 failed"
}

ip link add "${tag}br" type bridge || die "cannot create a bridge (ip link add type bridge)"
ip addr add "$subnet.254/24" dev "${tag}br"
ip link set "${tag}br" mtu "$mtu"
ip link set "${tag}br" up
hostfile="$work/hosts"
agent="$work/agent"
{
    echo '#!/bin/sh'
    echo '# rsh agent: mpirun calls it as AGENT [options] HOST COMMAND...; HOST is hN.'
    echo 'while [ "${1#-}" != "$1" ]; do shift; done'
    echo 'host="$1"; shift'
    echo 'case "$host" in'
} > "$agent"
for ((h = 0; h < hosts; h++)); do
    ns="${tag}h$h"
    ip netns add "$ns" || die "cannot create network namespace $ns (needs root)"
    ip link add "${tag}v$h" type veth peer name eth0 netns "$ns" || die "cannot create a veth pair"
    ip link set "${tag}v$h" mtu "$mtu" master "${tag}br" up
    ip netns exec "$ns" ip addr add "$subnet.$((h + 1))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 mtu "$mtu" up
    ip netns exec "$ns" ip link set lo up
    shape "$ns" eth0        # what the host sends
    shape "" "${tag}v$h"    # what it receives
    echo "h$h slots=$per_host" >> "$hostfile"
    echo "  h$h) exec ip netns exec $ns taskset -c ${host_cores[$h]} sh -c \"\$*\" ;;" >> "$agent"
done
echo '  *) echo "testbed agent: unknown host $host" >&2; exit 1 ;;' >> "$agent"
echo 'esac' >> "$agent"
chmod +x "$agent"

root=(); [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
# rtc_hwloc_vmhole none: the remote daemons do not share their topology through a shared-memory
# segment mapped into a hole of the address space (Open MPI 4.1's daemons crash now and then when
# that hole is beside the stack).
run=(mpirun "${root[@]}" -np $((hosts * per_host)) --hostfile "$hostfile" --map-by ppr:"$per_host":node --bind-to none
     --mca plm_rsh_agent "$agent" --mca btl tcp,self --mca rtc_hwloc_vmhole none
     --mca oob_tcp_if_include "$subnet.0/24" --mca btl_tcp_if_include "$subnet.0/24" "${mca[@]}" "$@")
for ((h = 0; h < hosts; h++)); do echo "testbed: host h$h = namespace ${tag}h$h, $subnet.$((h + 1)), CPUs ${host_cores[$h]}, link $rate" >&2; done
if [ -n "$timeout" ]; then
    setsid timeout --signal=TERM --kill-after=10 "$timeout" "${run[@]}" &
else
    setsid "${run[@]}" &
fi
mpirun_pid=$!
wait "$mpirun_pid"
status=$?
mpirun_pid=""
exit "$status"
