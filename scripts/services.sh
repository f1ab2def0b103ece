#!/usr/bin/env bash
# Real backend servers for mvcstore's integration tests, on loopback only.
#
#   scripts/services.sh up      build what is missing, start all, write .services.env
#   scripts/services.sh down    stop the recorded PIDs, remove data and .services.env
#   scripts/services.sh status  show what is recorded and whether it answers
#
# Servers (pinned): FerretDB (SQLite handler), fake-gcs-server (memory backend),
# OpenSearch and Elasticsearch 8 (the "integ-test-zip" distributions from Maven
# Central, run as an unprivileged user because both refuse to run as root).
#
# Built artefacts are cached outside the repository, in
# ${MVC_SERVICES_CACHE:-$HOME/.cache/mvcstore-services}; per-run state (PIDs,
# logs) lives in its run/ folder (shared by every checkout on the machine),
# server data under /tmp.
# Use the servers with:   . ./.services.env
#
# Optional environment:
#   MVC_SERVICES_CACHE     cache dir (see above)
#   MVC_SERVICES_SKIP      space-separated services not to run
#                          (ferretdb fakegcs opensearch elasticsearch)
#   MVC_SVC_USER           user for the JVM servers when run as root (mvcsvc)
#   MVC_SVC_JAVA_HOME      JDK (17+) for the JVM servers (default: java on PATH)
#   MVC_SVC_<NAME>_PORT    ports: MONGO, GCS, OS_HTTP, OS_TRANSPORT, ES_HTTP,
#                          ES_TRANSPORT
set -euo pipefail
umask 022

FERRETDB_VERSION=v1.24.2
FAKEGCS_VERSION=v1.56.1
OPENSEARCH_VERSION=2.19.6
ES_VERSION=8.19.21
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
CACHE=${MVC_SERVICES_CACHE:-$HOME/.cache/mvcstore-services}
# the servers are shared by every checkout on this machine: their state lives
# beside the cache, and each checkout gets a copy of the addresses
RUN_DIR=${MVC_SERVICES_RUN:-$CACHE/run}
ENV_FILE=$RUN_DIR/services.env
LOCAL_ENV_FILE=$REPO_ROOT/.services.env
SVC_USER=${MVC_SVC_USER:-mvcsvc}

MONGO_PORT=${MVC_SVC_MONGO_PORT:-27118}
GCS_PORT=${MVC_SVC_GCS_PORT:-4480}
OS_HTTP_PORT=${MVC_SVC_OS_HTTP_PORT:-9250}
OS_TRANSPORT_PORT=${MVC_SVC_OS_TRANSPORT_PORT:-9350}
ES_HTTP_PORT=${MVC_SVC_ES_HTTP_PORT:-9251}
ES_TRANSPORT_PORT=${MVC_SVC_ES_TRANSPORT_PORT:-9351}

ALL_SERVICES="ferretdb fakegcs opensearch elasticsearch"

FERRETDB_BIN=$CACHE/bin/ferretdb-$FERRETDB_VERSION
FAKEGCS_BIN=$CACHE/bin/fake-gcs-server-$FAKEGCS_VERSION
OPENSEARCH_DIST=$CACHE/dist/opensearch-$OPENSEARCH_VERSION
ES_DIST=$CACHE/dist/elasticsearch-$ES_VERSION

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --------------------------------------------------------------------------
# helpers

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed but not on PATH"
    done
}

is_skipped() { [[ " ${MVC_SERVICES_SKIP:-} " == *" $1 "* ]]; }

# Start time of a live process (field 22 of /proc/PID/stat), used with the PID
# to tell our process from an unrelated one that reused its number.
proc_start() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # the command name (field 2) may hold spaces: split after its ")"
    read -r -a fields <<<"${stat##*) }"
    # a zombie (exited, not yet reaped) counts as gone
    [[ "${fields[0]}" != Z ]] || return 1
    # fields[0] is field 3 (state), so starttime (field 22) is fields[19]
    printf '%s\n' "${fields[19]}"
}

# pid_alive PID STARTTIME: is that exact process still there?
pid_alive() {
    local now
    now=$(proc_start "$1") || return 1
    [[ "$now" == "$2" ]]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

java_home() {
    if [[ -n "${MVC_SVC_JAVA_HOME:-}" ]]; then
        printf '%s\n' "$MVC_SVC_JAVA_HOME"
        return
    fi
    need java
    local j
    j=$(readlink -f "$(command -v java)")
    printf '%s\n' "${j%/bin/java}"
}

ensure_svc_user() {
    [[ $EUID -eq 0 ]] || return 0
    id -u "$SVC_USER" >/dev/null 2>&1 && return 0
    need useradd
    log "creating system user $SVC_USER"
    useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --user-group "$SVC_USER"
}

# --------------------------------------------------------------------------
# building (into the cache, under a lock so parallel callers build once)

go_env() {
    export GOTOOLCHAIN=local CGO_ENABLED=0
    export GOPATH=$CACHE/go/path GOCACHE=$CACHE/go/build-cache GOMODCACHE=$CACHE/go/mod
    # -modcacherw: the module cache stays deletable with rm -rf
    export GOFLAGS="-modcacherw -buildvcs=false" GOWORK=off GO111MODULE=on
}

build_failed() {
    log "build failed; last lines of $1:"
    tail -n 30 "$1" >&2 || true
    exit 1
}

build_fakegcs() {
    [[ -x "$FAKEGCS_BIN" ]] && return 0
    need go
    log "building fake-gcs-server $FAKEGCS_VERSION (go install)"
    local gobin=$CACHE/tmp/gobin.$$
    rm -rf "$gobin"
    mkdir -p "$gobin"
    ( go_env; GOBIN=$gobin go install -trimpath "github.com/fsouza/fake-gcs-server@$FAKEGCS_VERSION" ) \
        >"$CACHE/tmp/build-fake-gcs-server.log" 2>&1 || build_failed "$CACHE/tmp/build-fake-gcs-server.log"
    mv -f "$gobin/fake-gcs-server" "$FAKEGCS_BIN"
    rm -rf "$gobin"
}

# FerretDB's module zip lacks build/version/version.txt (generated, git-ignored
# upstream), so a plain `go install` gives a binary that panics at start-up.
# Build from a writable copy of the module with that file written.
build_ferretdb() {
    [[ -x "$FERRETDB_BIN" ]] && return 0
    need go
    log "building FerretDB $FERRETDB_VERSION"
    local src=$CACHE/tmp/ferretdb-src.$$ moddir
    rm -rf "$src"
    moddir=$( go_env; cd "$CACHE/tmp" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' )
    [[ -n "$moddir" && -d "$moddir" ]] || die "go mod download did not give FerretDB's module dir"
    cp -R "$moddir" "$src"
    chmod -R u+w "$src"
    printf '%s\n' "$FERRETDB_VERSION" > "$src/build/version/version.txt"
    ( go_env; cd "$src" && go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb ) \
        >"$CACHE/tmp/build-ferretdb.log" 2>&1 || build_failed "$CACHE/tmp/build-ferretdb.log"
    mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
    rm -rf "$src"
}

# fetch_zip GROUP ARTIFACT VERSION DEST: resolve GROUP:ARTIFACT:VERSION:zip from
# Maven Central and unpack it as DEST (atomically).
fetch_zip() {
    local group=$1 artifact=$2 version=$3 dest=$4
    [[ -d "$dest/bin" ]] && return 0
    need mvn unzip
    log "fetching $group:$artifact:$version:zip from Maven Central"
    local tmp=$CACHE/tmp/zip.$$
    rm -rf "$tmp"
    mkdir -p "$tmp/out" "$tmp/unpacked"
    # -C: fail on a checksum mismatch instead of warning
    if ! mvn -B -q -C "$MAVEN_DEPENDENCY_PLUGIN:copy" \
            "-Dmaven.repo.local=$CACHE/m2" \
            "-Dartifact=$group:$artifact:$version:zip" \
            "-DoutputDirectory=$tmp/out" >"$tmp/mvn.log" 2>&1; then
        grep -E 'ERROR' "$tmp/mvn.log" | head -n 5 >&2 || true
        rm -rf "$tmp"
        return 1
    fi
    # (called in an `if`/`||` context, where set -e is off: check each step)
    unzip -q "$tmp/out/$artifact-$version.zip" -d "$tmp/unpacked" || return 1
    [[ -d "$tmp/unpacked/$artifact-$version/bin" ]] || { log "unexpected layout in $artifact-$version.zip"; return 1; }
    mkdir -p "$(dirname "$dest")" || return 1
    rm -rf "$dest"
    mv "$tmp/unpacked/$artifact-$version" "$dest" || return 1
    chmod -R a+rX "$dest" || return 1
    # the unpacked tree is what we keep; drop the zips to save space
    rm -rf "$tmp" "$CACHE/m2/${group//.//}/$artifact/$version"
}

build_all() {
    mkdir -p "$CACHE/bin" "$CACHE/dist" "$CACHE/tmp"
    exec 8>"$CACHE/.build.lock"
    flock 8
    if ! is_skipped ferretdb; then
        build_ferretdb
    fi
    if ! is_skipped fakegcs; then
        build_fakegcs
    fi
    if ! is_skipped opensearch; then
        fetch_zip org.opensearch.distribution.integ-test-zip opensearch "$OPENSEARCH_VERSION" "$OPENSEARCH_DIST" \
            || die "could not resolve the OpenSearch $OPENSEARCH_VERSION integ-test zip"
    fi
    ES_AVAILABLE=0
    if ! is_skipped elasticsearch; then
        if fetch_zip org.elasticsearch.distribution.integ-test-zip elasticsearch "$ES_VERSION" "$ES_DIST"; then
            ES_AVAILABLE=1
        else
            log "WARNING: Elasticsearch $ES_VERSION integ-test zip did not resolve; MVC_TEST_ES_URL will be unset"
        fi
    fi
    flock -u 8
    exec 8>&-
}

# --------------------------------------------------------------------------
# health checks: each one asks the server a real question

# MongoDB wire protocol: OP_MSG {ping: 1, $db: "admin"}; expect {ok: 1.0}.
check_ferretdb() {
    local port=$1 msg hex
    # header (len 51, id 1, responseTo 0, opCode 2013), flags 0, section kind 0,
    # then the BSON document {ping: int32 1, $db: "admin"}
    msg='\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00'
    msg+='\x00\x00\x00\x00\x00'
    # shellcheck disable=SC2016 # "$db" is the literal BSON key
    msg+='\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00'
    # shellcheck disable=SC2016 # the inner script expands its own arguments
    hex=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "$2" >&3
        n=$(head -c 4 <&3 | od -An -tu4 | tr -d " \n")
        [[ -n "$n" && "$n" -gt 20 && "$n" -lt 65536 ]] || exit 1
        head -c $((n - 4)) <&3 | od -An -tx1 -v
    ' _ "$port" "$msg" 2>/dev/null | tr -s ' \n' '  ') || return 1
    # "ok" as a BSON double equal to 1.0
    [[ "$hex" == *"01 6f 6b 00 00 00 00 00 00 00 f0 3f"* ]]
}

check_fakegcs() {
    curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$1/_internal/healthcheck" 2>/dev/null &&
        curl -fsS -m 3 "http://127.0.0.1:$1/storage/v1/b" 2>/dev/null | grep -q '"kind"'
}

# The cluster name is ours, so a stray server on the port does not pass.
check_search() {
    local port=$1 cluster=$2 body
    body=$(curl -fsS -m 8 "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null) || return 1
    [[ "$body" == *"\"cluster_name\":\"$cluster\""* && "$body" != *'"timed_out":true'* ]]
}

check_service() {
    case $1 in
        ferretdb) check_ferretdb "$2" ;;
        fakegcs) check_fakegcs "$2" ;;
        opensearch) check_search "$2" mvc-test-opensearch ;;
        elasticsearch) check_search "$2" mvc-test-elasticsearch ;;
    esac
}

# --------------------------------------------------------------------------
# state: .services/<name>.pid holds "PID STARTTIME" lines (the first one is the
# server process we started; Elasticsearch adds its server JVM, a child of its
# launcher); .services/<name>.port the port health checks use.

recorded_services() {
    local f
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        f=${f##*/}
        printf '%s\n' "${f%.pid}"
    done
}

service_healthy() {
    local name=$1 pid start port
    [[ -f "$RUN_DIR/$name.pid" && -f "$RUN_DIR/$name.port" ]] || return 1
    while read -r pid start; do
        [[ -n "$pid" ]] || continue
        pid_alive "$pid" "$start" || return 1
    done <"$RUN_DIR/$name.pid"
    port=$(cat "$RUN_DIR/$name.port")
    check_service "$name" "$port"
}

all_healthy() {
    [[ -f "$ENV_FILE" ]] || return 1
    local name n=0
    for name in $(recorded_services); do
        service_healthy "$name" || return 1
        n=$((n + 1))
    done
    [[ $n -gt 0 ]]
}

# stop_pid PID STARTTIME NAME: SIGTERM, wait, then SIGKILL that PID only.
stop_pid() {
    local pid=$1 start=$2 name=$3 i
    pid_alive "$pid" "$start" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 120; i++)); do # 30 s
        pid_alive "$pid" "$start" || return 0
        sleep 0.25
    done
    log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        pid_alive "$pid" "$start" || return 0
        sleep 0.25
    done
    log "WARNING: $name (pid $pid) is still there after SIGKILL"
}

do_down() {
    mkdir -p "$RUN_DIR"
    local name pid start
    rm -f "$ENV_FILE" "$LOCAL_ENV_FILE"
    for name in $(recorded_services); do
        # first line first (the launcher), then any children it recorded
        while read -r pid start; do
            if [[ -n "$pid" ]]; then
                stop_pid "$pid" "$start" "$name"
            fi
        done <"$RUN_DIR/$name.pid"
        rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.port"
    done
    if [[ -f "$RUN_DIR/data_root" ]]; then
        local root
        root=$(cat "$RUN_DIR/data_root")
        # only ever remove a dir this script created
        if [[ "$root" == */mvcstore-services.* && -d "$root" ]]; then
            rm -rf -- "$root"
        fi
        rm -f "$RUN_DIR/data_root"
    fi
}

# --------------------------------------------------------------------------
# starting

# launch NAME PORT [runuser] -- CMD...: start CMD detached, log to
# .services/logs/NAME.log, record its PID. The inner shell writes its own PID
# (which exec then hands to the server) to fd 3, so the recorded PID is the
# server itself, not a runuser/setsid wrapper. fd 8/9 (our locks) are closed
# so a long-running server cannot hold them.
launch() {
    local name=$1 port=$2 mode=$3
    shift 4
    local pidtmp=$RUN_DIR/$name.pid.tmp wrapper=()
    # both JVM servers refuse to run as root: use the service user then
    if [[ "$mode" == runuser && $EUID -eq 0 ]]; then
        wrapper=(runuser -u "$SVC_USER" --)
    fi
    if port_in_use "$port"; then
        die "port $port (for $name) is already in use by another process"
    fi
    rm -f "$pidtmp"
    : >"$RUN_DIR/logs/$name.log"
    setsid "${wrapper[@]}" bash -c 'echo "$$" >&3; exec 3>&-; exec "$@"' _ "$@" \
        3>"$pidtmp" </dev/null >>"$RUN_DIR/logs/$name.log" 2>&1 8>&- 9>&- &
    local i pid=
    for ((i = 0; i < 100; i++)); do
        [[ -s "$pidtmp" ]] && pid=$(cat "$pidtmp") && [[ -n "$pid" ]] && break
        sleep 0.1
    done
    [[ -n "$pid" ]] || die "$name did not start (no PID); see $RUN_DIR/logs/$name.log"
    local start
    start=$(proc_start "$pid") || start=gone
    printf '%s %s\n' "$pid" "$start" >"$RUN_DIR/$name.pid"
    printf '%s\n' "$port" >"$RUN_DIR/$name.port"
    rm -f "$pidtmp"
    log "started $name (pid $pid) on 127.0.0.1:$port"
}

start_ferretdb() {
    local d=$DATA_ROOT/ferretdb
    mkdir -p "$d/data" "$d/state"
    launch ferretdb "$MONGO_PORT" direct -- \
        env DO_NOT_TRACK=1 "$FERRETDB_BIN" \
        --handler=sqlite --sqlite-url="file:$d/data/" \
        --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$d/state" \
        --debug-addr=- --telemetry=disable --log-level=warn
}

start_fakegcs() {
    launch fakegcs "$GCS_PORT" direct -- \
        "$FAKEGCS_BIN" -scheme http -host 127.0.0.1 -port "$GCS_PORT" \
        -backend memory -public-host "127.0.0.1:$GCS_PORT" \
        -external-url "http://127.0.0.1:$GCS_PORT" -log-level warn
}

# Prepare a node dir for a JVM server: the distribution is hard-linked (or
# copied) out of the cache, since the cache may sit in a home dir the service
# user cannot enter; config is a real copy because the node writes its
# keystore there.
prepare_node() {
    local dist=$1 node=$2
    mkdir -p "$node"
    chmod 755 "$node"
    cp -al "$dist" "$node/home" 2>/dev/null || { rm -rf "${node:?}/home"; cp -a "$dist" "$node/home"; }
    cp -R "$dist/config" "$node/config"
    mkdir -p "$node/data" "$node/logs" "$node/tmp"
    # Heap is fixed at 512m via *_JAVA_OPTS: drop the distribution's own
    # -Xms/-Xmx. bin/opensearch-env (and elasticsearch-env) cd into the home
    # dir, which the service user cannot write, so make OpenSearch's relative
    # gc log, error file and heap dump paths absolute (ES 8 already resolves
    # them against its logs dir).
    sed -i -e '/^-Xm[sx]/d' \
        -e "s#file=logs/#file=$node/logs/#" \
        -e "s#ErrorFile=logs/#ErrorFile=$node/logs/#" \
        -e "s#HeapDumpPath=data\$#HeapDumpPath=$node/data#" \
        "$node/config/jvm.options"
    if [[ $EUID -eq 0 ]]; then
        chown -R "$SVC_USER:$SVC_USER" "$node/config" "$node/data" "$node/logs" "$node/tmp"
    fi
}

start_opensearch() {
    local node=$DATA_ROOT/opensearch jhome
    jhome=$(java_home)
    prepare_node "$OPENSEARCH_DIST" "$node"
    ( cd "$node" || exit 1; launch opensearch "$OS_HTTP_PORT" runuser -- \
        env OPENSEARCH_JAVA_HOME="$jhome" OPENSEARCH_PATH_CONF="$node/config" \
        OPENSEARCH_TMPDIR="$node/tmp" OPENSEARCH_JAVA_OPTS="-Xms512m -Xmx512m" \
        "$node/home/bin/opensearch" \
        -Ecluster.name=mvc-test-opensearch -Enode.name=mvc-os \
        -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 \
        -Ehttp.port="$OS_HTTP_PORT" -Etransport.port="$OS_TRANSPORT_PORT" \
        -Epath.data="$node/data" -Epath.logs="$node/logs" \
        -Ecluster.routing.allocation.disk.threshold_enabled=false )
}

# The ES 8 integ-test zip ships x-pack-security, and on first start its CLI
# auto-configures TLS on HTTP and a password (the node then refuses plain
# HTTP). Setting xpack.security.enabled=false explicitly stops that.
# ES's launcher JVM probes the server's JVM flags and leaves two
# /tmp/final-flags* dirs behind per start; CLI_JAVA_OPTS (the launcher's own
# options; JAVA_TOOL_OPTIONS is unset by bin/elasticsearch-env) moves its temp
# dir into the node dir, which `down` removes.
start_elasticsearch() {
    local node=$DATA_ROOT/elasticsearch jhome
    jhome=$(java_home)
    prepare_node "$ES_DIST" "$node"
    ( cd "$node" || exit 1; launch elasticsearch "$ES_HTTP_PORT" runuser -- \
        env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$node/config" \
        CLI_JAVA_OPTS="-Djava.io.tmpdir=$node/tmp" \
        ES_TMPDIR="$node/tmp" ES_JAVA_OPTS="-Xms512m -Xmx512m" \
        "$node/home/bin/elasticsearch" \
        -Ecluster.name=mvc-test-elasticsearch -Enode.name=mvc-es \
        -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 \
        -Ehttp.port="$ES_HTTP_PORT" -Etransport.port="$ES_TRANSPORT_PORT" \
        -Epath.data="$node/data" -Epath.logs="$node/logs" \
        -Ecluster.routing.allocation.disk.threshold_enabled=false \
        -Expack.security.enabled=false )
}

# ES runs its server JVM as a child of a small launcher JVM; record the child
# too, so `down` can make sure it is gone.
record_es_children() {
    local pid start child
    read -r pid start <"$RUN_DIR/elasticsearch.pid"
    # shellcheck disable=SC2013 # the file is a space-separated list of PIDs
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        start=$(proc_start "$child") || continue
        printf '%s %s\n' "$child" "$start" >>"$RUN_DIR/elasticsearch.pid"
    done
}

print_failure_logs() {
    local name=$1 f
    log "---- last lines of $RUN_DIR/logs/$name.log ----"
    tail -n 40 "$RUN_DIR/logs/$name.log" >&2 || true
    # a JVM server's own logs live in its data dir, which the cleanup removes:
    # keep a copy under .services/logs/
    local keep=$RUN_DIR/logs/$name-node-logs
    rm -rf "$keep"
    for f in "$DATA_ROOT/$name/logs/"*.log; do
        [[ -s "$f" && "$f" != */gc.log ]] || continue
        mkdir -p "$keep"
        cp "$f" "$keep/"
        log "---- last lines of $keep/${f##*/} ----"
        tail -n 20 "$f" >&2 || true
    done
}

# wait_ready NAME SECONDS: poll until the server answers; fail early if it died.
wait_ready() {
    local name=$1 limit=$2 pid start port deadline
    read -r pid start <"$RUN_DIR/$name.pid"
    port=$(cat "$RUN_DIR/$name.port")
    deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        if check_service "$name" "$port"; then
            log "$name answers on 127.0.0.1:$port"
            return 0
        fi
        if ! pid_alive "$pid" "$start"; then
            log "$name (pid $pid) exited before answering"
            print_failure_logs "$name"
            return 1
        fi
        sleep 1
    done
    log "$name did not answer on 127.0.0.1:$port within ${limit}s"
    print_failure_logs "$name"
    return 1
}

write_env() {
    local tmp=$ENV_FILE.tmp.$$
    {
        echo "# Written by scripts/services.sh up; stopped by scripts/services.sh down."
        if [[ -f "$RUN_DIR/ferretdb.pid" ]]; then
            echo "export MVC_TEST_MONGO_URI='mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true&retryWrites=false'"
        fi
        if [[ -f "$RUN_DIR/opensearch.pid" ]]; then
            echo "export MVC_TEST_OS_URL='http://127.0.0.1:$OS_HTTP_PORT'"
        fi
        if [[ -f "$RUN_DIR/elasticsearch.pid" ]]; then
            echo "export MVC_TEST_ES_URL='http://127.0.0.1:$ES_HTTP_PORT'"
        fi
        if [[ -f "$RUN_DIR/fakegcs.pid" ]]; then
            echo "export STORAGE_EMULATOR_HOST='http://127.0.0.1:$GCS_PORT'"
        fi
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
    cp -f "$ENV_FILE" "$LOCAL_ENV_FILE"
}

do_up() {
    if all_healthy; then
        cp -f "$ENV_FILE" "$LOCAL_ENV_FILE"
        log "already up (see $LOCAL_ENV_FILE)"
        return 0
    fi
    # something is missing, dead or not answering: start from a clean slate
    do_down

    need curl setsid timeout od
    build_all

    local services=() name
    for name in $ALL_SERVICES; do
        is_skipped "$name" && continue
        [[ "$name" == elasticsearch && "$ES_AVAILABLE" != 1 ]] && continue
        services+=("$name")
    done
    [[ ${#services[@]} -gt 0 ]] || die "every service is skipped"

    if [[ " ${services[*]} " == *" opensearch "* || " ${services[*]} " == *" elasticsearch "* ]]; then
        need runuser
        ensure_svc_user
    fi

    # fail before starting anything if one of our ports is taken
    local port ports=()
    for name in "${services[@]}"; do
        case $name in
            ferretdb) ports+=("$MONGO_PORT") ;;
            fakegcs) ports+=("$GCS_PORT") ;;
            opensearch) ports+=("$OS_HTTP_PORT" "$OS_TRANSPORT_PORT") ;;
            elasticsearch) ports+=("$ES_HTTP_PORT" "$ES_TRANSPORT_PORT") ;;
        esac
    done
    for port in "${ports[@]}"; do
        if port_in_use "$port"; then
            die "port $port on 127.0.0.1 is already in use by another process (set MVC_SVC_*_PORT to move ours)"
        fi
    done

    DATA_ROOT=$(mktemp -d /tmp/mvcstore-services.XXXXXX)
    chmod 755 "$DATA_ROOT"
    printf '%s\n' "$DATA_ROOT" >"$RUN_DIR/data_root"
    mkdir -p "$RUN_DIR/logs"

    # From here on, any failure or interrupt stops whatever was started.
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then log "up failed; stopping what was started"; do_down; fi' EXIT
    for name in "${services[@]}"; do
        "start_$name"
    done
    local failed=0
    for name in "${services[@]}"; do
        case $name in
            ferretdb | fakegcs) wait_ready "$name" 60 || failed=1 ;;
            *) wait_ready "$name" 180 || failed=1 ;;
        esac
    done
    [[ $failed -eq 0 ]] || exit 1
    if [[ " ${services[*]} " == *" elasticsearch "* ]]; then
        record_es_children
    fi
    write_env
    UP_DONE=1
    trap - EXIT
    log "all up; use: . $LOCAL_ENV_FILE"
}

do_status() {
    local name pid start port state rc=0 any=0
    for name in $(recorded_services); do
        any=1
        port=$(cat "$RUN_DIR/$name.port" 2>/dev/null || echo '?')
        read -r pid start <"$RUN_DIR/$name.pid"
        if ! pid_alive "$pid" "$start"; then
            state="dead"
            rc=1
        elif check_service "$name" "$port"; then
            state="answering"
        else
            state="running, not answering"
            rc=1
        fi
        printf '%-14s pid %-8s 127.0.0.1:%-6s %s\n' "$name" "$pid" "$port" "$state"
    done
    if [[ $any -eq 0 ]]; then
        echo "no services recorded in $RUN_DIR"
        return 3
    fi
    [[ -f "$ENV_FILE" ]] && cat "$ENV_FILE"
    return $rc
}

main() {
    local cmd=${1:-}
    case $cmd in
        up | down | status) ;;
        *)
            echo "usage: $0 up|down|status" >&2
            exit 2
            ;;
    esac
    mkdir -p "$RUN_DIR"
    if [[ "$cmd" == status ]]; then
        do_status
        return
    fi
    # one up/down at a time on this machine
    need flock
    exec 9>"$RUN_DIR/lock"
    flock 9
    "do_$cmd"
}

main "$@"
