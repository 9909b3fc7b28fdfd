#!/bin/sh
# plane-guard runtime wrapper: the Plane container's command becomes
#   /bin/sh <dir>/entrypoint.sh <original command...>
# It prepares the environment and then exec's supervisor.py with the original command: the
# supervisor keeps the container's PID, runs the command as its child, forwards the kubelet's
# signals to the process that does the work (Plane's worker and beat entrypoints start Celery
# without exec, and a bash PID 1 ignores SIGTERM), reaps zombies and exits with the command's
# status. Without python on PATH, or with PLANE_GUARD_SUPERVISE=0/false/no, it exec's the original
# command itself, which then is the container's process. POSIX sh (dash, busybox).
# Never print the broker URL: it carries the password.

_pg_dir=${0%/*}
[ "$_pg_dir" = "$0" ] && _pg_dir=.
case $_pg_dir in
    /*) ;;
    *) _pg_dir=$(CDPATH='' cd -- "$_pg_dir" && pwd) || exit 1 ;;
esac

if [ "$#" -eq 0 ]; then
    echo "plane-guard: entrypoint.sh got no command to run; the container command must be" \
        "/bin/sh $_pg_dir/entrypoint.sh <original command> [args...]" >&2
    exit 64
fi

# envFrom values and Secrets reach the container only now: the settings the webhook left to the
# start (policy defaults vs the container's own values, the heartbeat in a URL from a Secret) are
# decided by environment.py, which prints only `export NAME='value'` lines for this shell.
_pg_py=
for _pg_candidate in python3 python; do
    if command -v "$_pg_candidate" >/dev/null 2>&1; then
        _pg_py=$_pg_candidate
        break
    fi
done
if [ -z "$_pg_py" ]; then
    echo "plane-guard: no python3 or python on PATH; the policy's settings and the AMQP heartbeat are not applied" >&2
# -I: the image's own sitecustomize or .pth files must not write into the exported values.
elif _pg_exports=$("$_pg_py" -I "$_pg_dir/environment.py"); then
    eval "$_pg_exports"
else
    echo "plane-guard: could not decide the settings at start; the container keeps its own environment" >&2
fi
unset _pg_py _pg_candidate _pg_exports

# The start-up hook (sitecustomize) goes first; the image's own PYTHONPATH stays after it.
case ":${PYTHONPATH:-}:" in
    *":$_pg_dir/python:"*) ;;
    *) PYTHONPATH=$_pg_dir/python${PYTHONPATH:+:$PYTHONPATH} ;;
esac
export PYTHONPATH

# The supervisor (see its docstring), unless the escape hatch says no or there is no python.
case ${PLANE_GUARD_SUPERVISE:-} in
    0 | [Ff]alse | FALSE | [Nn]o | NO) ;;
    *)
        for _pg_py in python3 python; do
            if command -v "$_pg_py" >/dev/null 2>&1 && [ -r "$_pg_dir/supervisor.py" ]; then
                set -- "$_pg_py" -I -S "$_pg_dir/supervisor.py" "$@"
                break
            fi
        done
        ;;
esac
unset _pg_dir _pg_py
exec "$@"
