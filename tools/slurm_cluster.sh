#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py and for trying
# `--launcher slurm` without a cluster. Run as root; idempotent (a second run finds the node idle
# and does nothing). Debian/Ubuntu: packages slurm-wlm (22.05 on Debian 12) and munge.
#
# Why these settings: containers have no systemd and no writable cgroups, so processes are
# tracked through /proc (proctrack/linuxproc) and tasks are not confined (task/none); cores and
# memory are the consumable resources (cons_tres, CR_Core_Memory; a job without --mem gets its
# CPUs' share of memory, DefMemPerCPU) so two 1-CPU jobs of an array run side by side on 2 cores; no accounting daemon (jobacct_gather/none); KillWait=5 gives a
# preempted or requeued job 5 s between SIGTERM and SIGKILL to write its checkpoint; job
# credentials expire after 10 s (cred_expire), which is also how long a requeued job waits before
# it starts again (the default, 120 s, would hold the CI's requeue test for two minutes).
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm

if [ "$(id -u)" != 0 ]; then
    echo "slurm_cluster.sh: run as root (it installs packages and starts daemons)" >&2
    exit 2
fi

running() { pgrep -x -r R,S,D "$1" >/dev/null; }  # zombies of earlier daemons do not count
node_idle() { sinfo -h -N -n localhost -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi

mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cpus=$(nproc)
conf=$(cat <<EOF
ClusterName=gapbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=5
MinJobAge=300
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((mem_mb / cpus))
EOF
)
if command -v sinfo >/dev/null && [ -f "$CONF_DIR/slurm.conf" ] \
    && [ "$(cat "$CONF_DIR/slurm.conf")" = "$conf" ] && node_idle; then
    echo "slurm_cluster.sh: node localhost is up already"
    exit 0
fi

# munge: one key shared by the daemons and the clients of this machine.
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
changed=0
if [ ! -f "$CONF_DIR/slurm.conf" ] || [ "$(cat "$CONF_DIR/slurm.conf")" != "$conf" ]; then
    printf '%s\n' "$conf" > "$CONF_DIR/slurm.conf"
    changed=1
fi

if [ "$changed" = 1 ] && running slurmctld; then
    # Some settings (cred_expire among them) are read at start only: restart both daemons.
    scontrol shutdown || true
    for _ in $(seq 100); do running slurmctld || running slurmd || break; sleep 0.1; done
fi
running slurmctld || slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
running slurmd || slurmd -N localhost

for _ in $(seq 120); do
    if node_idle; then
        echo "slurm_cluster.sh: one-node cluster up (localhost, $cpus CPUs, ${mem_mb} MB)"
        exit 0
    fi
    state=$(sinfo -h -N -n localhost -o '%T' 2>/dev/null || true)
    case "$state" in
        down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "slurm_cluster.sh: the node did not come up idle; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
sinfo -N >&2 || true
exit 1
