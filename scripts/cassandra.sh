#!/usr/bin/env bash
# Run a real single-node Apache Cassandra 5.0 for tests/CI, built from Maven Central jars
# (no Docker, no tarball download available here).
#
# usage: scripts/cassandra.sh start|stop|status|check|restart|kill|fetch
#
#   start    fetch jars (once), write config, launch CassandraDaemon, wait for real CQL.
#            No-op if this node is already running and answering.
#   stop     TERM, wait, KILL after CASSANDRA_STOP_TIMEOUT; succeeds if not running.
#   status   "running"/"not running"; exit 0/1.
#   check    CQL handshake + query (stdlib Python, no cqlsh); exit 0/1.
#   kill     SIGKILL the node at once (a crash, for node-loss tests); data stays.
#   fetch    only fetch the jars.
#
# Environment (all optional):
#   CASSANDRA_VERSION        cassandra-all version from Maven Central   (default 5.0.9)
#   CASSANDRA_AUTH           none | password                            (default none)
#                            password = PasswordAuthenticator + CassandraAuthorizer,
#                            superuser cassandra/cassandra. Each mode has its own node
#                            dir (.cache/cassandra/node, .cache/cassandra/node-password),
#                            and every command acts on the node of the current mode.
#   CASSANDRA_PORT           CQL port                                   (default 9042)
#   CASSANDRA_STORAGE_PORT   internode port                             (default 7000)
#   CASSANDRA_JMX_PORT       local-only JMX port; unset/empty = JMX off (default off)
#   CASSANDRA_CPUS           CPUs the JVM may assume; also sets concurrent_writes=CPUS+1
#                            (jvector limit, see cassandra.yaml comment)  (default nproc)
#   CASSANDRA_HEAP           -Xms/-Xmx                                  (default 1G)
#   CASSANDRA_DIRECT_MEMORY  -XX:MaxDirectMemorySize                    (default 1G)
#   CASSANDRA_FRESH=1        start: stop this node if running, wipe its data, start anew
#   CASSANDRA_START_TIMEOUT  seconds to wait for CQL                    (default 180)
#   CASSANDRA_STOP_TIMEOUT   seconds to wait after TERM before KILL     (default 60)
#   CASSANDRA_USER / CASSANDRA_PASSWORD  login used by `check` in password mode
#                                        (default cassandra/cassandra)
#   CASSANDRA_JAVA           java binary; must be Java 11 or 17  (default: first 11/17 among
#                            java on PATH, $JAVA_HOME, /usr/lib/jvm/*)
#   CASSANDRA_CACHE_DIR      jar + node cache root      (default <repo>/.cache/cassandra)
#
# Cluster members (scripts/cassandra-cluster.sh sets these; one node per loopback address):
#   CASSANDRA_HOST           listen/rpc address                         (default 127.0.0.1)
#   CASSANDRA_NODE_DIR       this node's directory       (default by CASSANDRA_AUTH, above)
#   CASSANDRA_SEEDS          seed list host:port,...           (default this node itself)
#   CASSANDRA_INITIAL_TOKEN  fixed token; with it the node joins without bootstrapping
#                            (auto_bootstrap: false: a fresh cluster has no data to stream)
#   CASSANDRA_CLUSTER_NAME   cluster name                  (default assistants-proxy-test)
#   CASSANDRA_COMMITLOG_SYNC periodic | group                          (default periodic)
#                            group: a write is acknowledged only once its commit log is
#                            synced (10 ms windows). Periodic replays, after a kill -9, only
#                            what the last sync covered: two replicas killed at once lose
#                            the last seconds of acknowledged writes.
#   CASSANDRA_PAXOS_VARIANT  v1 | v2: Paxos for lightweight transactions (default v1, 5.0's).
#                            v2 keeps LOCAL_SERIAL reads linearizable with LWTs that timed
#                            out half-way (CASSANDRA-12126), which v1 does not on RF > 1.
#   CASSANDRA_UNSAFE_SYSTEM  1: schema changes are not made durable (fast DDL for test
#                            suites); 0 for nodes that tests kill     (default 1)
#
# Only one node can listen on a given CQL/storage port: to run the `none` and `password`
# nodes at the same time give one of them other CASSANDRA_PORT/CASSANDRA_STORAGE_PORT values.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

VERSION="${CASSANDRA_VERSION:-5.0.9}"
CPUS="${CASSANDRA_CPUS:-$(nproc 2>/dev/null || echo 2)}"
AUTH="${CASSANDRA_AUTH:-none}"
HOST="${CASSANDRA_HOST:-127.0.0.1}"
SEEDS="${CASSANDRA_SEEDS:-}"
INITIAL_TOKEN="${CASSANDRA_INITIAL_TOKEN:-}"
CLUSTER_NAME="${CASSANDRA_CLUSTER_NAME:-assistants-proxy-test}"
COMMITLOG_SYNC="${CASSANDRA_COMMITLOG_SYNC:-periodic}"
UNSAFE_SYSTEM="${CASSANDRA_UNSAFE_SYSTEM:-1}"
PAXOS_VARIANT="${CASSANDRA_PAXOS_VARIANT:-v1}"
CQL_PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${CASSANDRA_JMX_PORT:-}"
HEAP="${CASSANDRA_HEAP:-1G}"
DIRECT_MEMORY="${CASSANDRA_DIRECT_MEMORY:-1G}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-60}"
CHECK_USER="${CASSANDRA_USER:-cassandra}"
CHECK_PASSWORD="${CASSANDRA_PASSWORD:-cassandra}"

CACHE_DIR="${CASSANDRA_CACHE_DIR:-$REPO_ROOT/.cache/cassandra}"
LIB_DIR="$CACHE_DIR/$VERSION/lib"
LIB_MARKER="$CACHE_DIR/$VERSION/.fetched"

case "$AUTH" in
  none) NODE_DIR="$CACHE_DIR/node" ;;
  password) NODE_DIR="$CACHE_DIR/node-password" ;;
  *) echo "cassandra.sh: CASSANDRA_AUTH must be 'none' or 'password', got '$AUTH'" >&2; exit 2 ;;
esac
case "$COMMITLOG_SYNC" in
  periodic) COMMITLOG_CONF="commitlog_sync_period: 10000ms" ;;
  group) COMMITLOG_CONF="commitlog_sync_group_window: 10ms" ;;
  *) echo "cassandra.sh: CASSANDRA_COMMITLOG_SYNC must be 'periodic' or 'group', got '$COMMITLOG_SYNC'" >&2; exit 2 ;;
esac
NODE_DIR="${CASSANDRA_NODE_DIR:-$NODE_DIR}"
SEEDS="${SEEDS:-$HOST:$STORAGE_PORT}"
CONF_DIR="$NODE_DIR/conf"
DATA_DIR="$NODE_DIR/data"
LOG_DIR="$NODE_DIR/logs"
PID_FILE="$NODE_DIR/cassandra.pid"

log() { echo "cassandra.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# A pid counts only if it is alive AND is our daemon for this node dir: a stale pid file
# after a reboot may point at an unrelated process that we must never signal.
node_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "CassandraDaemon" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-Dcassandra.storagedir=$DATA_DIR" || return 1
  echo "$pid"
}

# Cassandra 5.0 supports only Java 11/17 (it installs a SecurityManager, which JDK 24+ refuse),
# so a JAVA_HOME/PATH pointing at e.g. Java 25 for other tools must not be used blindly.
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n 1
}

pick_java() {
  local cand major
  if [ -n "${CASSANDRA_JAVA:-}" ] && [ ! -x "$CASSANDRA_JAVA" ]; then
    die "CASSANDRA_JAVA=$CASSANDRA_JAVA is not an executable"
  fi
  for cand in "${CASSANDRA_JAVA:-}" "$(command -v java 2>/dev/null || true)" \
      ${JAVA_HOME:+"$JAVA_HOME/bin/java"} /usr/lib/jvm/java-17-openjdk-*/bin/java \
      /usr/lib/jvm/*17*/bin/java /usr/lib/jvm/*11*/bin/java; do
    if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
    major="$(java_major "$cand")"
    case "$major" in
      11 | 17) JAVA_BIN="$cand"; return 0 ;;
    esac
    [ -n "${CASSANDRA_JAVA:-}" ] && [ "$cand" = "$CASSANDRA_JAVA" ] \
      && die "CASSANDRA_JAVA=$CASSANDRA_JAVA is Java '$major'; Cassandra 5.0 needs Java 11 or 17"
  done
  die "no Java 11 or 17 found (java on PATH, \$JAVA_HOME, /usr/lib/jvm); install openjdk-17-jre-headless or set CASSANDRA_JAVA"
}

cql_check() {
  local args=("$HOST" "$CQL_PORT")
  [ "$AUTH" = password ] && args+=(--user "$CHECK_USER" --password "$CHECK_PASSWORD")
  python3 "$SCRIPT_DIR/cassandra/cql_check.py" "${args[@]}" "$@"
}

port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

show_log_tail() {
  local f
  for f in "$LOG_DIR/stdout.log" "$LOG_DIR/system.log"; do
    [ -s "$f" ] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

fetch_jars() {
  if [ -f "$LIB_MARKER" ]; then
    return 0
  fi
  require mvn "install Maven 3.x; it fetches cassandra-all and its runtime jars from Maven Central"
  log "fetching org.apache.cassandra:cassandra-all:$VERSION + runtime deps from Maven Central"
  local work="$CACHE_DIR/$VERSION"
  mkdir -p "$work"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.assistants-proxy</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  # Copy into a temp dir and rename, so an interrupted fetch never looks complete.
  rm -rf "$work/lib.tmp"
  if ! mvn -q -B -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$work/lib.tmp" >"$work/mvn.log" 2>&1; then
    tail -n 40 "$work/mvn.log" >&2
    die "mvn could not fetch cassandra-all:$VERSION (full log: $work/mvn.log)"
  fi
  [ -f "$work/lib.tmp/cassandra-all-$VERSION.jar" ] || die "cassandra-all-$VERSION.jar missing after mvn run"
  rm -rf "$LIB_DIR"
  mv "$work/lib.tmp" "$LIB_DIR"
  date -u +%FT%TZ >"$LIB_MARKER"
  log "fetched $(find "$LIB_DIR" -name "*.jar" | wc -l) jars into $LIB_DIR"
}

write_config() {
  mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR" "$NODE_DIR/triggers"
  local authenticator=AllowAllAuthenticator authorizer=AllowAllAuthorizer
  if [ "$AUTH" = password ]; then
    authenticator=PasswordAuthenticator
    authorizer=CassandraAuthorizer
  fi
  # Regenerated on every start so port/auth env changes apply; data stays.
  cat >"$CONF_DIR/cassandra.yaml" <<EOF
# Generated by scripts/cassandra.sh - edits are overwritten on start.
cluster_name: $CLUSTER_NAME
num_tokens: 1
${INITIAL_TOKEN:+initial_token: $INITIAL_TOKEN
auto_bootstrap: false}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$SEEDS"
listen_address: $HOST
rpc_address: $HOST
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
# Exactly one data directory: SAI vector indexes refuse multiple ones.
data_file_directories:
  - $DATA_DIR/data
commitlog_directory: $DATA_DIR/commitlog
saved_caches_directory: $DATA_DIR/saved_caches
hints_directory: $DATA_DIR/hints
cdc_raw_directory: $DATA_DIR/cdc_raw
paxos_variant: $PAXOS_VARIANT
commitlog_sync: $COMMITLOG_SYNC
$COMMITLOG_CONF
authenticator: $authenticator
authorizer: $authorizer
role_manager: CassandraRoleManager
# Validity 0 disables the auth caches, so GRANT/CREATE ROLE done by a test is seen at once.
roles_validity: 0ms
permissions_validity: 0ms
credentials_validity: 0ms
# The Amazon Corretto crypto provider jar is not on Maven Central; use the JRE's.
crypto_provider:
  - class_name: org.apache.cassandra.security.JREProvider
# Tests drop/truncate tables a lot; snapshots would only eat disk and time.
auto_snapshot: false
# jvector 1.0.2 (SAI vector memtable index) allows at most availableProcessors+1 concurrent
# inserts per index and otherwise fails the write ("Number of outstanding pooled objects has
# gone beyond the limit of 3", CASSANDRA-21644, fixed after 5.0.9). Every local mutation
# (client writes, LWT commits, commit-log replay) holds a MutationStage permit, so capping
# concurrent_writes at that limit makes concurrent vector inserts safe.
concurrent_writes: $((CPUS + 1))
EOF

  cat >"$CONF_DIR/logback.xml" <<'EOF'
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
  </root>
</configuration>
EOF
}

java_opts() {
  JAVA_OPTS=(
    "-Xms$HEAP" "-Xmx$HEAP" -Xss256k "-XX:MaxDirectMemorySize=$DIRECT_MEMORY"
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300
    -XX:+UseStringDeduplication -XX:+UseTLAB -XX:+ResizeTLAB
    "-XX:ErrorFile=$LOG_DIR/hs_err_%p.log"
    # Pin the CPU count the JVM sees to the one concurrent_writes was derived from (cgroup
    # quotas could otherwise make the JVM see fewer CPUs than nproc).
    "-XX:ActiveProcessorCount=$CPUS"
    # Die loudly on OOM instead of limping on with possibly corrupt state.
    -XX:+ExitOnOutOfMemoryError
    # Java 17 module flags, as in Cassandra 5.0 conf/jvm17-server.options.
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    -Djava.net.preferIPv4Stack=true
    # cassandra.config must be a URL, not a bare path.
    "-Dcassandra.config=file://$CONF_DIR/cassandra.yaml"
    "-Dcassandra.storagedir=$DATA_DIR"
    "-Dcassandra.logdir=$LOG_DIR"
    "-Dlogback.configurationFile=file://$CONF_DIR/logback.xml"
    "-Dcassandra-pidfile=$PID_FILE"
    "-Dcassandra.triggers_dir=$NODE_DIR/triggers"
    -Dcassandra-foreground=yes
    # Single node: nothing to gossip with, so skip the settle/ring waits (saves ~30 s+). A
    # fresh cluster of fixed-token seeds (cassandra-cluster.sh) streams nothing either.
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.consistent.rangemovement=false
    # No peers to tell about our shutdown: saves 2 s on every stop.
    -Dcassandra.shutdown_announce_in_ms=0
    -Dchronicle.announcer.disable=true
  )
  # No fsync of system tables on schema changes: test suites create/drop a lot. Not for nodes
  # that get killed: schema changes then live in memtables only, and a node killed -9 comes
  # back without the tables made since it started, skipping their commit-log entries.
  if [ "$UNSAFE_SYSTEM" = 1 ]; then
    JAVA_OPTS+=(-Dcassandra.unsafesystem=true)
  fi
  if [ -n "$JMX_PORT" ]; then
    JAVA_OPTS+=("-Dcassandra.jmx.local.port=$JMX_PORT")
  fi
  # bin/cassandra loads jamm as an agent for exact memtable sizing; do the same.
  local jamm
  for jamm in "$LIB_DIR"/jamm-*.jar; do
    [ -f "$jamm" ] && JAVA_OPTS+=("-javaagent:$jamm")
  done
}

wait_for_cql() {
  local pid="$1" start_ts="$2" deadline=$(( $2 + START_TIMEOUT ))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      rm -f "$PID_FILE"
      die "Cassandra (pid $pid) exited during start-up (logs: $LOG_DIR)"
    fi
    # Port + log line first (cheap), then a real protocol round trip incl. login.
    if port_open "$CQL_PORT" && grep -q "listening for CQL clients" "$LOG_DIR/system.log" 2>/dev/null \
        && cql_check --quiet; then
      log "CQL ready on $HOST:$CQL_PORT after $(( $(date +%s) - start_ts ))s (pid $pid, auth=$AUTH)"
      cql_check >&2 || true
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      show_log_tail
      # Don't leave a half-started 1.5 GB JVM behind for the next run to trip over.
      cmd_stop
      die "Cassandra did not answer CQL on $HOST:$CQL_PORT within ${START_TIMEOUT}s (logs: $LOG_DIR)"
    fi
    sleep 1
  done
}

cmd_start() {
  pick_java
  require python3 "needed for the CQL readiness probe"
  local pid start_ts
  start_ts="$(date +%s)"
  if [ "${CASSANDRA_FRESH:-0}" = 1 ] && node_pid >/dev/null; then
    # A fresh node was asked for: a running one must go first, or the wipe is skipped.
    cmd_stop
  fi
  if pid="$(node_pid)"; then
    if cql_check --quiet; then
      log "already running (pid $pid) and answering CQL on $HOST:$CQL_PORT"
      return 0
    fi
    # Probably a concurrent start still booting: wait for it instead of starting twice.
    log "pid $pid is running but CQL does not answer yet; waiting"
    wait_for_cql "$pid" "$start_ts"
    return 0
  fi
  rm -f "$PID_FILE"

  local p
  for p in "$CQL_PORT" "$STORAGE_PORT" ${JMX_PORT:+"$JMX_PORT"}; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use (another Cassandra, e.g. the other CASSANDRA_AUTH mode?); stop it or set CASSANDRA_PORT/CASSANDRA_STORAGE_PORT/CASSANDRA_JMX_PORT"
    fi
  done

  fetch_jars
  if [ "${CASSANDRA_FRESH:-0}" = 1 ]; then
    log "CASSANDRA_FRESH=1: wiping $DATA_DIR"
    rm -rf "$DATA_DIR"
  fi
  write_config
  # Keep one previous run's logs for post-mortems, without unbounded growth.
  local f
  for f in system.log stdout.log; do
    [ -f "$LOG_DIR/$f" ] && mv -f "$LOG_DIR/$f" "$LOG_DIR/$f.1"
  done

  java_opts
  log "starting Cassandra $VERSION with $JAVA_BIN (auth=$AUTH, cql=$HOST:$CQL_PORT, storage=$STORAGE_PORT, heap=$HEAP, node=$NODE_DIR)"
  # setsid + nohup: detach from the caller's terminal/process group so the node outlives
  # the invoking shell; in a non-interactive shell setsid execs in place, so $! is java.
  # 9>&-: the daemon must not inherit (and hold forever) the start/stop lock.
  setsid nohup "$JAVA_BIN" "${JAVA_OPTS[@]}" -cp "$LIB_DIR/*" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >"$LOG_DIR/stdout.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_for_cql "$pid" "$start_ts"
}

cmd_stop() {
  local pid
  if ! pid="$(node_pid)"; then
    rm -f "$PID_FILE"
    log "not running (auth=$AUTH)"
    return 0
  fi
  log "stopping pid $pid (TERM)"
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$STOP_TIMEOUT" ]; then
      log "still alive after ${STOP_TIMEOUT}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
  log "stopped"
}

# A crash, not a shutdown: no drain, no flush, peers learn of it through gossip only.
cmd_kill() {
  local pid
  if ! pid="$(node_pid)"; then
    log "not running ($HOST)"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
  log "killed pid $pid ($HOST)"
}

cmd_status() {
  local pid
  if pid="$(node_pid)"; then
    if cql_check --quiet 2>/dev/null; then
      echo "running (pid $pid, auth=$AUTH, cql $HOST:$CQL_PORT answering)"
    else
      echo "running (pid $pid, auth=$AUTH, cql $HOST:$CQL_PORT NOT answering yet)"
    fi
    return 0
  fi
  echo "not running (auth=$AUTH)"
  return 1
}

cmd_check() {
  require python3 "needed for the CQL probe"
  cql_check
}

# Serialise start/stop per node dir: two test runners calling `start` at once must not
# launch two daemons (the loser would die on a bind error after clobbering the pid file).
lock_node() {
  mkdir -p "$NODE_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$NODE_DIR/.lock"
    flock 9
  fi
}

case "${1:-}" in
  start) lock_node; cmd_start ;;
  stop) lock_node; cmd_stop ;;
  status) cmd_status ;;
  check) cmd_check ;;
  restart) lock_node; cmd_stop; cmd_start ;;
  kill) lock_node; cmd_kill ;;
  fetch) fetch_jars ;;
  *)
    echo "usage: $0 start|stop|status|check|restart|kill|fetch   (see header of $0 for env vars)" >&2
    exit 2
    ;;
esac
