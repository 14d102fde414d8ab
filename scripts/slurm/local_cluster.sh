#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian/Ubuntu, as root): what `make test-cluster` runs the cluster
# tests on, and a way to try the sbatch templates without a cluster.
#
#   scripts/slurm/local_cluster.sh start   # installs slurmd, slurmctld and munge if missing, starts munged,
#                                          # the controller and the node daemon; waits until the node is idle
#   export SLURM_CONF=/tmp/unlearnkit-slurm/slurm.conf   # (printed by start) for sinfo, sbatch, scancel, ...
#   scripts/slurm/local_cluster.sh stop    # stops the daemons start started, by the PIDs they recorded
#
# Everything it writes (slurm.conf, spool and state folders, logs, PID files) is under UNLEARNKIT_SLURM_DIR
# (default /tmp/unlearnkit-slurm); /etc/slurm is not touched. The munge key /etc/munge/munge.key is created
# if missing. The node offers this machine's CPUs; there are no GPUs, so jobs use CPU trainer overlays
# (configs/trainer/cpu_ddp.yaml).
set -euo pipefail

DIR="${UNLEARNKIT_SLURM_DIR:-/tmp/unlearnkit-slurm}"
export SLURM_CONF="${DIR}/slurm.conf"
HOST="$(hostname -s)"

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [[ "$(id -u)" == 0 ]] || die "slurmd, slurmctld and munge are not installed: run as root to install them"
  command -v apt-get >/dev/null || die "slurmd, slurmctld and munge are not installed and there is no apt-get"
  echo "installing slurmd slurmctld munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmd slurmctld munge >/dev/null
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then
    return
  fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 50); do munge_works && break; sleep 0.1; done
  munge_works || die "munged did not start (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "${DIR}/munged.pid"  # ours to stop
}

write_config() {
  local node
  node="$(slurmd -C 2>/dev/null | head -n 1)"  # NodeName=<host> CPUs=... RealMemory=...: this machine
  [[ "${node}" == NodeName=* ]] || die "slurmd -C printed no node line: ${node}"
  mkdir -p "${DIR}/state" "${DIR}/spool"
  cat > "${SLURM_CONF}" <<EOF
# Written by scripts/slurm/local_cluster.sh: a one-node cluster for tests.
ClusterName=local
SlurmctldHost=${HOST}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after cred_expire seconds (default 120): the requeue test waits this long
AuthInfo=cred_expire=10
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
SlurmctldLogFile=${DIR}/slurmctld.log
SlurmdLogFile=${DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# look at pending jobs every 2 s (default 60 s/30 s): a requeued job starts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
${node}
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_packages
  mkdir -p "${DIR}"
  if running "${DIR}/slurmctld.pid" || running "${DIR}/slurmd.pid"; then
    die "a local cluster is already running from ${DIR}: stop it first"
  fi
  rm -rf "${DIR}/state" "${DIR}/spool"  # a fresh cluster: no jobs recovered from an earlier one
  start_munge
  write_config
  slurmctld
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -N -o %T 2>/dev/null | grep -qx idle; then
      echo "local SLURM cluster up: node ${HOST} idle; export SLURM_CONF=${SLURM_CONF}"
      return
    fi
    sleep 0.5
  done
  sinfo -N -l || true
  die "the node did not become idle within 30 s (logs: ${DIR}/slurmctld.log, ${DIR}/slurmd.log)"
}

stop_pid() {  # stop the daemon whose PID file is $1, waiting for it to exit
  local file="$1" pid
  running "${file}" || { rm -f "${file}"; return 0; }
  pid="$(cat "${file}")"
  kill "${pid}"
  for _ in $(seq 100); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
  kill -0 "${pid}" 2>/dev/null && kill -9 "${pid}"
  rm -f "${file}"
}

stop() {
  if [[ -f "${SLURM_CONF}" ]] && running "${DIR}/slurmctld.pid"; then
    scancel --quiet --user "$(id -un)" 2>/dev/null || true  # no job outlives the cluster
    for _ in $(seq 40); do [[ -z "$(squeue -h 2>/dev/null)" ]] && break; sleep 0.5; done
  fi
  stop_pid "${DIR}/slurmd.pid"
  stop_pid "${DIR}/slurmctld.pid"
  stop_pid "${DIR}/munged.pid"
  echo "local SLURM cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
