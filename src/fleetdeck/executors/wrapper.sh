# fleetdeck's remote wrapper: runs one attempt on an SSH host and owns its life.
#
# fleetdeck runs this file as the `sh -c` script of an exec channel, without its
# comment and blank lines (ssh.py: remote_command). POSIX sh and tools every
# Linux has (mktemp, setsid, awk, grep, cat, cp, wc, rm, mkdir, sleep), with no
# GNU-only options: BusyBox hosts work too. Linux only: processes are found in
# /proc.
#
# Two modes, and nothing but these small parameters on the command line, which
# every user of the host can read with ps:
#
#   attempt TOKEN GRACE HEARTBEAT MISSES
#     Run one attempt. TOKEN: its random mark; GRACE: hundredths of a second
#     between SIGTERM and SIGKILL; HEARTBEAT: seconds between fleetdeck's
#     heartbeats; MISSES: heartbeat intervals without one before the attempt
#     is stopped.
#   reap GRACE TOKEN...
#     Stop every process carrying one of the TOKENs, as a stop would: attempts
#     of a connection fleetdeck lost, found when it connects again.
#
# The attempt comes on stdin, one item a line; VALUE is escaped for printf %b
# (backslash, newline and NUL), so a line never holds a raw newline:
#   cwd VALUE           workdir ("~" and "~/..." are the home, relative: from it)
#   inputs VALUE        the inputs JSON (FLEETDECK_INPUTS)
#   agent-output VALUE  a CI attempt's copy of its agent's output
#   env VALUE           one line of sh: export NAME='value'
#   argv VALUE          one line of sh: set -- 'command' 'argument'...
#   command NAME        the command's name, as is (no newline), to check it is there
#   path PATH           the worker's PATH, as is, if it sets one: the check uses it
#   go                  start it
# and then, while it runs:
#   ping                fleetdeck's heartbeat, every HEARTBEAT seconds
#   stop GRACE          stop it (GRACE in hundredths of a second)
#   kill                SIGKILL what is left of a stop now (a second Ctrl-C)
# The end of stdin is a stop too: fleetdeck closed the channel, or sshd saw the
# connection end. After a network partition sshd may not see that for hours;
# missing heartbeats stop the attempt instead.
#
# To fleetdeck, on the channel's stderr (the attempt's own stderr is merged into
# its stdout, the channel's stdout), each line starting with TOKEN:
#   TOKEN started PID        the command runs; PID leads its session
#   TOKEN error CODE         it could not start: noproc tmp setup workdir
#                            notfound noexec
#   TOKEN lost               no heartbeat for MISSES intervals: stopping it
#   TOKEN exit STATUS SIZE   the command ended with STATUS (128+N: signal N, or
#                            exit 128+N: sh cannot tell them apart); SIZE bytes
#                            of its output file follow ("-": it wrote none)
# Just before `exit`, NUL TOKEN NUL goes to stdout, after everything the command
# wrote there: fleetdeck's copy of the log is complete once it has seen it. The
# command's leftovers are stopped after the report, and the wrapper exits once
# they are gone.

mode=$1
# fd 3 carries messages to fleetdeck; stray messages of the tools used here go
# into the attempt's log, with its output.
exec 3>&2 2>&1

say() { printf '%s %s\n' "$token" "$*" >&3; }

# Every live process of the attempt, one pid a line: those whose environment
# holds a mark named in $marks, the members of the session and group that
# $leader leads, and all their descendants.
pids() {
  {
    # shellcheck disable=SC2086 # $marks is a list of grep options (hex tokens)
    grep -l -F $marks /proc/[0-9]*/environ
    cat /proc/[0-9]*/stat
  } 2>/dev/null |
    awk -v leader="$leader" '
      /^\/proc\// { split($0, path, "/"); seed[path[3]] = 1; next }
      {
        # After the command name (which may hold spaces): state ppid pgrp session.
        pid = $1; sub(/.*\) /, "")
        if ($1 == "Z" || $1 == "X") next
        live[pid] = 1; parent[pid] = $2
        if (leader != "" && ($3 == leader || $4 == leader)) seed[pid] = 1
      }
      END {
        for (pid in seed) if (pid in live) found[pid] = 1
        do {
          more = 0
          for (pid in live) if (!(pid in found) && (parent[pid] in found)) { found[pid] = 1; more = 1 }
        } while (more)
        for (pid in found) print pid
      }'
}

# The time since boot in hundredths of a second, in $now. /proc/uptime always
# has two decimals; the leading 1 keeps "05" from reading as octal.
clock() {
  read -r uptime _ </proc/uptime
  now=$((${uptime%.*} * 100 + 1${uptime#*.} - 100))
}

# SIGTERM once to each process of the attempt, SIGKILL to all that is left
# once $1 hundredths of a second have passed (at once after a "kill"). Returns
# when nothing is left, or when SIGKILL has not helped for about 5 s (a process
# stuck in the kernel: nothing more can be done).
killtree() {
  clock
  deadline=$((now + $1)) signalled=" " kills=0
  list=$(pids)
  while [ -n "$list" ] && [ "$kills" -lt 100 ]; do
    clock
    if [ "$now" -ge "$deadline" ] || { [ -n "$dir" ] && [ -e "$dir/kill" ]; }; then
      # The leader first while it is unreaped (its pid cannot be reused yet):
      # were its children killed first, a shell that waits for them could
      # exit 0 before its own SIGKILL lands, and the stop would read as a
      # success.
      # shellcheck disable=SC2086 # one pid a word
      kill -KILL $unreaped $list 2>/dev/null
      kills=$((kills + 1))
    else
      for pid in $list; do
        case $signalled in
          *" $pid "*) ;;
          *) kill -TERM "$pid" 2>/dev/null; signalled="$signalled$pid " ;;
        esac
      done
    fi
    sleep 0.05
    list=$(pids)
  done
}

# Files are created with `true >FILE`, not `: >FILE`: a failed redirection on a
# special builtin such as `:` ends the whole shell.

# Claim the stop of the attempt: the first caller gets 0, any later one 1. With
# noclobber (set -C), > creates the file or fails (O_EXCL): atomic, and no
# process to start.
claim_stop() {
  set -C
  true 2>/dev/null >"$dir/stopping"
  claimed=$?
  set +C
  return "$claimed"
}

# Stop the attempt with a grace of $1 (after claim_stop), then say it is done.
stop_tree() {
  killtree "$1"
  true >"$dir/stopped"
}

if [ "$mode" = reap ]; then
  grace=$2
  shift 2
  token=reap marks='' leader='' unreaped='' dir=''
  for mark in "$@"; do marks="$marks -e FLEETDECK_ATTEMPT_MARK=$mark"; done
  killtree "$grace"
  exit 0
fi

token=$2 grace=$3 heartbeat=$4 misses=$5
marks="-e FLEETDECK_ATTEMPT_MARK=$token" leader=''
[ -r /proc/self/stat ] || { say error noproc; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/fleetdeck.XXXXXXXXXX") || { say error tmp; exit 1; }
fail() { say error "$1"; rm -rf "$dir"; exit 1; }

# The attempt, from stdin. `read` takes one line and not a byte more (the shell
# reads a pipe byte by byte), so what follows "go" stays for the stop reader.
workdir='' command_name='' worker_path='' go=''
true >"$dir/env" || fail setup
while IFS= read -r line; do
  value=${line#* }
  case $line in
    go) go=1; break ;;
    "cwd "*) workdir=$(printf '%b' "$value") ;;
    "inputs "*) printf '%b' "$value" >"$dir/inputs.json" || fail setup ;;
    "agent-output "*) printf '%b' "$value" >"$dir/agent-output" || fail setup ;;
    "env "*) printf '%b\n' "$value" >>"$dir/env" || fail setup ;;
    "argv "*) printf '%b\n' "$value" >"$dir/argv" || fail setup ;;
    "command "*) command_name=$value ;;
    "path "*) worker_path=$value ;;
  esac
done
# No "go": fleetdeck went away before it sent the whole attempt.
if [ -z "$go" ] || [ ! -e "$dir/argv" ]; then rm -rf "$dir"; exit 1; fi
[ -e "$dir/inputs.json" ] || printf '{}' >"$dir/inputs.json" || fail setup

if [ -n "$workdir" ]; then
  # shellcheck disable=SC2088 # a literal ~ from fleetdeck, replaced here
  case $workdir in
    "~") workdir=$HOME ;;
    "~/"*) workdir=$HOME/${workdir#"~/"} ;;
    /*) ;;
    # Relative to the login directory. The ./ keeps cd from taking "-" for
    # $OLDPWD and from looking the name up in $CDPATH.
    *) workdir=./$workdir ;;
  esac
  cd "$workdir" 2>/dev/null || fail workdir
fi

# Is the command there? A name without a slash is looked up in the worker's
# PATH, if it sets one (the prefix assignment holds for that lookup only).
case $command_name in
  */*)
    if [ ! -e "$command_name" ]; then
      fail notfound
    elif [ -d "$command_name" ] || [ ! -x "$command_name" ]; then
      fail noexec
    fi
    ;;
  *) PATH=${worker_path:-$PATH} command -v "$command_name" >/dev/null 2>&1 || fail notfound ;;
esac

# The command in its own session (setsid), with the worker's variables and
# then fleetdeck's own (they win, as they do for a local attempt). No -w: the
# background job is never a group leader, so setsid does not fork.
setsid=setsid
command -v setsid >/dev/null 2>&1 || setsid=
# shellcheck disable=SC2016 # the inner shell expands them
$setsid /bin/sh -c '. "$1/env" &&
  export FLEETDECK_INPUTS="$1/inputs.json" FLEETDECK_OUTPUT="$1/output" FLEETDECK_ATTEMPT_MARK="$2" &&
  if [ -e "$1/agent-output" ]; then export FLEETDECK_AGENT_OUTPUT="$1/agent-output"; fi &&
  . "$1/argv" && exec "$@"' fleetdeck-attempt "$dir" "$token" </dev/null 3>&- &
leader=$! unreaped=$!
# A write to a vanished connection must not kill the wrapper before it has
# cleaned up (the command, started before this, keeps the default SIGPIPE).
trap '' PIPE
say started "$leader"

# Heartbeats and stop requests. The end of input stops the attempt too. A stop
# runs in the background (heartbeats and "kill" must still be read), and only
# once claimed: a request that comes too late touches nothing. The explicit
# <&4: sh gives a background job /dev/null as stdin otherwise.
exec 4<&0
(
  while IFS= read -r line; do
    case $line in
      ping) true >"$dir/ping" ;;
      "stop "*) if claim_stop; then stop_tree "${line#stop }" & fi ;;
      kill) true >"$dir/kill"; if claim_stop; then stop_tree 0 & fi ;;
    esac
  done
  if claim_stop; then stop_tree "$grace"; fi
) <&4 >/dev/null 2>&1 3>&- &
reader=$!
exec 4<&- </dev/null

# The watchdog: after $misses heartbeat intervals without one, fleetdeck has
# given up on this attempt (and likely runs it elsewhere): stop it. Its sleep
# runs as a job, so that the wrapper's SIGTERM at the end takes it along (a
# trapped signal interrupts wait); and it must not hold fd 3, or the channel
# would stay open until the sleep ends.
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  missed=0
  while [ "$missed" -lt "$misses" ]; do
    sleep "$heartbeat" 3>&- &
    nap=$!
    wait "$nap"
    if rm "$dir/ping" 2>/dev/null; then missed=0; else missed=$((missed + 1)); fi
  done
  say lost
  exec 3>&-
  if claim_stop; then stop_tree "$grace"; fi
) >/dev/null 2>&1 &
watchdog=$!

# Quiet: some shells tell of a job killed by a signal ("Killed"), which would
# land in the attempt's log.
wait "$leader" 2>/dev/null
status=$? unreaped=''
# Report at once; what the command left running is stopped after. The output
# file is copied first: a leftover may still be writing it.
printf '\000%s\000' "$token"
if [ -f "$dir/output" ] && cp "$dir/output" "$dir/sent"; then
  say exit "$status" "$(($(wc -c <"$dir/sent")))"
  cat "$dir/sent" >&3
else
  say exit "$status" -
fi
# Stop the leftovers, or wait for the stop under way. (If the connection is cut
# off, the report above may block until sshd notices; the watchdog stops the
# leftovers meanwhile.)
if claim_stop; then
  stop_tree "$grace"
else
  until [ -e "$dir/stopped" ]; do sleep 0.05; done
fi
# Once the reader and the watchdog are gone, nothing writes in $dir any more.
# (Quiet: wait would tell the log they were "Terminated".)
kill "$reader" "$watchdog" 2>/dev/null
wait "$reader" "$watchdog" 2>/dev/null
rm -rf "$dir"
