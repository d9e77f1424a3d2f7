#!/usr/bin/env bash
# A private single-node Slurm cluster on localhost, for testing the job-array template:
#   scripts/slurm_local.sh start DIR CTLD_PORT SLURMD_PORT   → prints the SLURM_CONF to use
#   scripts/slurm_local.sh stop DIR
# slurmctld and slurmd (Debian's slurm-wlm) run as root with their state, spool, logs and pid
# files under DIR, on the given ports, authenticated by munge (started when not running).
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:?a folder for the cluster files}

case "$cmd" in
start)
    ctld_port=${3:?slurmctld port}
    slurmd_port=${4:?slurmd port}
    for bin in slurmctld slurmd sbatch munged; do
        command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
        command -v "$bin" >/dev/null 2>&1 || { echo "$bin is not installed (just slurm installs slurm-wlm and munge)" >&2; exit 3; }
    done
    [ "$(id -u)" = 0 ] || { echo "the local Slurm daemons run as root here; this user is not" >&2; exit 3; }
    mkdir -p "$dir"/{state,spool,log}
    node=$(hostname -s)
    cat > "$dir/slurm.conf" <<EOF
ClusterName=glassbox-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if ! pgrep -x munged >/dev/null 2>&1; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
        [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
        su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
    fi
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -c   # -c: a clean start, no state from an earlier cluster in DIR
    slurmd
    for _ in $(seq 1 100); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
            echo "$SLURM_CONF"
            exit 0
        fi
        sleep 0.2
    done
    echo "the local Slurm node did not become idle within 20 s; logs in $dir/log" >&2
    exit 1
    ;;
stop)
    for daemon in slurmd slurmctld; do
        if [ -s "$dir/$daemon.pid" ]; then
            kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
        fi
    done
    ;;
*)
    echo "usage: $0 start DIR CTLD_PORT SLURMD_PORT | stop DIR" >&2
    exit 2
    ;;
esac
