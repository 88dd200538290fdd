# Shared preamble of every stage script (sourced, never run):
#
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#   baf_init "$@"
#
# baf_init answers -h/--help with the calling script's header comment, sets ROOT (the repository
# root) and PYTHON (the repository's .venv when it exists, else python3; PYTHON overrides), and
# checks that PYTHON has the project's dependencies, so a missing one is one line, not a traceback.
# The helpers below print "<script>: error: ..." and exit 2 (a user mistake).

BAF_SCRIPT="$(basename "${BASH_SOURCE[1]:-$0}")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

baf_help() {  # the caller's header comment, from line 2 up to `set -euo pipefail`
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[2]:-$0}" | sed '$d' | sed 's/^# \{0,1\}//'
}

baf_die() {  # baf_die MESSAGE...: one line on stderr, exit 2
    echo "$BAF_SCRIPT: error: $*" >&2
    exit 2
}

baf_default_python() {
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        echo "$ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

baf_check_python() {  # every import the stages need, found without importing them (fast)
    local missing
    if ! command -v "$PYTHON" > /dev/null 2>&1; then
        baf_die "PYTHON=$PYTHON: no such interpreter; run \`make venv\` (creates .venv) or set PYTHON"
    fi
    missing="$("$PYTHON" - <<'PY' 2>/dev/null
import importlib.util
names = ["torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "sklearn", "tqdm", "onnx",
         "onnxruntime", "matplotlib"]
print(" ".join(name for name in names if importlib.util.find_spec(name) is None))
PY
)" || baf_die "PYTHON=$PYTHON does not run; run \`make venv\` (creates .venv) or set PYTHON"
    if [[ -n "$missing" ]]; then
        baf_die "PYTHON=$PYTHON lacks $missing; run \`make venv\` (creates .venv with requirements.txt) or set PYTHON"
    fi
}

baf_init() {
    if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
        baf_help
        exit 0
    fi
    PYTHON="${PYTHON:-$(baf_default_python)}"
    export PYTHON
    if [[ "${BAF_PYTHON_CHECKED:-}" != "$PYTHON" ]]; then
        baf_check_python
        export BAF_PYTHON_CHECKED="$PYTHON"  # child scripts skip the check
    fi
}

baf_require_dir() {  # baf_require_dir VAR [what]: the directory named by $VAR exists
    local var="$1" what="${2:-directory}"
    local value="${!var:-}"
    [[ -n "$value" ]] || baf_die "$var is empty; set it to the $what"
    [[ -d "$value" ]] || baf_die "$var=$value: no such $what"
}

baf_require_file() {  # baf_require_file VAR [what]: the file named by $VAR exists
    local var="$1" what="${2:-file}"
    local value="${!var:-}"
    [[ -n "$value" ]] || baf_die "$var is empty; set it to the $what"
    [[ -f "$value" ]] || baf_die "$var=$value: no such $what"
}

baf_require_choice() {  # baf_require_choice VAR CHOICE...: $VAR is one of the choices
    local var="$1"
    shift
    local value="${!var:-}" choice
    for choice in "$@"; do
        [[ "$value" == "$choice" ]] && return 0
    done
    baf_die "$var must be one of $*, got '$value'"
}

baf_require_int() {  # baf_require_int VAR [MIN] [MAX]: $VAR is an integer in [MIN, MAX] (MIN defaults to 0)
    local var="$1" low="${2:-0}" high="${3:-}"
    local value="${!var:-}"
    [[ "$value" =~ ^-?[0-9]+$ ]] || baf_die "$var must be an integer, got '$value'"
    (( ${#value} <= 18 )) || baf_die "$var=$value is out of range"  # beyond what shell arithmetic holds
    local sign=1
    [[ "$value" == -* ]] && sign=-1
    value=$((sign * 10#${value#-}))  # 08 is eight, not an octal error
    (( value >= low )) || baf_die "$var must be >= $low, got $value"
    [[ -z "$high" ]] || (( value <= high )) || baf_die "$var must be <= $high, got $value"
}

_baf_number() {  # _baf_number VAR VALUE MIN MAX STRICT: VALUE a finite decimal in [MIN, MAX] ((MIN, MAX] if STRICT)
    local var="$1" value="$2" low="$3" high="$4" strict="$5"
    [[ "$value" =~ ^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$ ]] \
        || baf_die "$var must be a number, got '$value'"
    awk -v v="$value" 'BEGIN { x = v + 0; exit !(x <= 1e300 && x >= -1e300) }' \
        || baf_die "$var must be a finite number, got '$value'"
    if [[ -n "$low" ]] && ! awk -v v="$value" -v b="$low" -v s="$strict" 'BEGIN { exit !(s ? v + 0 > b + 0 : v + 0 >= b + 0) }'; then
        baf_die "$var must be $([[ -n "$strict" ]] && echo '>' || echo '>=') $low, got '$value'"
    fi
    if [[ -n "$high" ]] && ! awk -v v="$value" -v b="$high" 'BEGIN { exit !(v + 0 <= b + 0) }'; then
        baf_die "$var must be <= $high, got '$value'"
    fi
}

baf_require_number() {  # baf_require_number VAR [MIN] [MAX] [strict]: a finite number in [MIN, MAX] (MIN excluded if strict)
    _baf_number "$1" "${!1:-}" "${2:-}" "${3:-}" "${4:-}"
}

baf_require_numbers() {  # baf_require_numbers VAR [MIN] [MAX] [strict]: one or more such numbers, separated by spaces
    local var="$1" word words
    read -r -a words <<< "${!var:-}"
    (( ${#words[@]} > 0 )) || baf_die "$var is empty; set it to one or more numbers separated by spaces"
    for word in "${words[@]}"; do _baf_number "$var" "$word" "${2:-}" "${3:-}" "${4:-}"; done
}

baf_require_ints() {  # baf_require_ints VAR [MIN] [MAX]: one or more integers, separated by spaces
    local var="$1" word words
    read -r -a words <<< "${!var:-}"
    (( ${#words[@]} > 0 )) || baf_die "$var is empty; set it to one or more integers separated by spaces"
    for word in "${words[@]}"; do
        (BAF_WORD="$word" baf_require_int BAF_WORD "${2:-0}" "${3:-}") 2> /dev/null \
            || baf_die "$var must hold integers >= ${2:-0}$([[ -n "${3:-}" ]] && echo " and <= ${3}"), got '$word'"
    done
}

baf_require_outdir() {  # baf_require_outdir VAR [what]: $VAR names a directory this script may create or write into
    local var="$1" what="${2:-output directory}"
    local value="${!var:-}" probe
    [[ -n "$value" ]] || baf_die "$var is empty; set it to the $what"
    if [[ -e "$value" && ! -d "$value" ]]; then baf_die "$var=$value: exists and is not a directory (the $what)"; fi
    probe="$value"
    while [[ ! -e "$probe" ]]; do probe="$(dirname "$probe")"; done  # the nearest existing ancestor
    [[ -d "$probe" ]] || baf_die "$var=$value: $probe is not a directory (the $what)"
    # a real probe (a directory created and removed): permissions alone miss read-only and virtual file systems
    probe="$(mktemp -d "$probe/.baf_write_probe.XXXXXX" 2> /dev/null)" && rmdir "$probe" \
        || baf_die "$var=$value: cannot create or write in it (the $what)"
}

baf_py() {  # run PYTHON with the repository importable, from any working directory
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"
}

baf_require_task() {  # baf_require_task VAR: $VAR names a GLUE task of glue.tasks
    local var="$1"
    local value="${!var:-}"
    if ! baf_py -c "import sys; from glue.tasks import TASKS; sys.exit(0 if sys.argv[1].lower() in TASKS else 1)" \
            "$value" 2> /dev/null; then
        baf_die "$var=$value is not a GLUE task; choose one of $(baf_py -c "from glue.tasks import TASKS; print(', '.join(TASKS))")"
    fi
}

baf_hold_lock() {  # baf_hold_lock FILE WHAT: hold an exclusive lock on FILE for as long as this script (or a job
    # it started) runs, or die naming the holder. flock(2) on a descriptor this shell keeps: the kernel drops it
    # when the last process holding the descriptor ends, so a killed run leaves no stale lock.
    local file="$1" what="$2" holder
    exec {BAF_LOCK_FD}>>"$file" || baf_die "$file: cannot open the lock of the $what"
    holder="$("${PYTHON:-python3}" -I -S -c '
import fcntl, os, sys, time
fd, path, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print(open(path).read().strip() or "another process")
    sys.exit(1)
os.ftruncate(fd, 0)
stamp = time.strftime("%H:%M:%S")
os.write(fd, f"pid {pid} since {stamp}\n".encode())
' "$BAF_LOCK_FD" "$file" "$$")" || baf_die "the $what is in use by ${holder:-another process}; wait for that run or stop it (one run per directory)"
}

# ---- supervising child jobs
# Every job runs under script/lib/supervise.py: in a process group of its own that ends when the job is
# stopped, when this script ends, or when this script dies -- SIGKILL included (the supervisor watches
# its parent). So stopping any level (make, a pipeline, a stage script) stops everything below it.
BAF_SUPERVISED=0

baf_stop_children() {  # baf_stop_children SIGNAL: pass SIGNAL to every running job, wait until they end
    local signal="$1" pid pids
    pids="$(jobs -pr)"
    [[ -n "$pids" ]] || return 0
    for pid in $pids; do kill "-$signal" "$pid" 2> /dev/null || true; done
    for pid in $pids; do wait "$pid" 2> /dev/null || true; done  # bounded: supervisors SIGKILL after a grace
}

baf_supervise() {  # SIGINT/SIGTERM/SIGHUP/exit stop every job started with baf_spawn (called by baf_spawn)
    BAF_SUPERVISED=1
    trap 'trap - INT TERM HUP; baf_stop_children INT; trap - EXIT; exit 130' INT
    trap 'trap - INT TERM HUP; baf_stop_children TERM; trap - EXIT; exit 143' TERM
    trap 'trap - INT TERM HUP; baf_stop_children TERM; trap - EXIT; exit 129' HUP
    trap 'baf_stop_children TERM' EXIT
}

baf_spawn() {  # baf_spawn CMD...: start CMD in the background, supervised ($! is its supervisor)
    [[ "$BAF_SUPERVISED" == 1 ]] || baf_supervise
    "${PYTHON:-python3}" -I -S "$ROOT/script/lib/supervise.py" -- "$@" &
}

baf_run() {  # baf_run CMD...: run CMD supervised and wait for it (signals reach this script at once)
    baf_spawn "$@"
    wait "$!"
}

baf_run_queue() {  # baf_run_queue [--spare SPARE] N CMD_STRING...: run the commands (bash -c) at most N at a time.
    # A failed job does not stop the others (the status is the last failure's); a job stopped by a signal stops
    # them all. --spare SPARE: once every command has started, each slot that falls idle while others still run
    # starts SPARE (bash -c; e.g. a worker that helps the running jobs), stopped with TERM when the last command
    # ends; its own status never counts. Needs bash >= 5.1 (wait -p); an older bash runs no spare.
    local spare="" width status=0 running=0 next=0 rc pid
    if [[ "$1" == "--spare" ]]; then spare="$2"; shift 2; fi
    if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then spare=""; fi
    width="$1"
    shift
    local -a commands=("$@")
    local -A spares=()
    while (( next < ${#commands[@]} || running > 0 )); do
        while (( next < ${#commands[@]} && running < width )); do
            baf_spawn bash -c "${commands[next]}"
            next=$((next + 1))
            running=$((running + 1))
        done
        if [[ -n "$spare" ]] && (( next == ${#commands[@]} && running > 0 && running + ${#spares[@]} < width )); then
            baf_spawn bash -c "$spare"
            spares[$!]=1
            continue
        fi
        rc=0
        pid=""
        wait -n -p pid || rc=$?
        if [[ -n "$pid" && -n "${spares[$pid]:-}" ]]; then
            unset "spares[$pid]"
            if (( rc > 128 )); then baf_stop_children TERM; return "$rc"; fi
            (( rc == 0 )) || spare=""  # a spare that fails is not started again
            continue
        fi
        running=$((running - 1))
        if (( rc > 128 )); then baf_stop_children TERM; return "$rc"; fi
        (( rc == 0 )) || status=$rc
    done
    for pid in "${!spares[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    for pid in "${!spares[@]}"; do wait "$pid" 2> /dev/null || true; done
    return "$status"
}

baf_run_py() {  # baf_run_py ARGS...: PYTHON ARGS supervised, with the repository importable (python -m ...)
    baf_run env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"
}
