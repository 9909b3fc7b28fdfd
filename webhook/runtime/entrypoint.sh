#!/bin/sh
# plane-guard runtime wrapper: the Plane container's command becomes
#   /bin/sh <dir>/entrypoint.sh <original command...>
# It prepares the environment and then exec's the original command, so the application keeps
# the container's PID, receives its signals and decides its exit code. POSIX sh (dash, busybox).
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

# Secrets reach the container only at start-up, so the heartbeat the webhook could not add to a
# literal URL is merged here, by the same code (amqp_url.py) the webhook uses.
if [ -n "${PLANE_GUARD_AMQP_HEARTBEAT:-}" ]; then
    _pg_url_var=${PLANE_GUARD_AMQP_URL_VAR:-AMQP_URL}
    case $_pg_url_var in
        '' | [0-9]* | *[!A-Za-z0-9_]*)
            echo "plane-guard: PLANE_GUARD_AMQP_URL_VAR is not a variable name; AMQP heartbeat not added" >&2
            _pg_url_var=
            ;;
    esac
    _pg_url_set=
    [ -n "$_pg_url_var" ] && eval "_pg_url_set=\${$_pg_url_var:+yes}"
    if [ -n "$_pg_url_var" ] && [ -z "$_pg_url_set" ]; then
        echo "plane-guard: $_pg_url_var is not set in this container; AMQP heartbeat not added" >&2
    elif [ -n "$_pg_url_set" ]; then
        _pg_py=
        for _pg_candidate in python3 python; do
            if command -v "$_pg_candidate" >/dev/null 2>&1; then
                _pg_py=$_pg_candidate
                break
            fi
        done
        if [ -z "$_pg_py" ]; then
            echo "plane-guard: no python3 or python on PATH; AMQP heartbeat not added" >&2
        # -I: the image's own sitecustomize or .pth files must not write into the merged URL.
        elif _pg_merged=$(PLANE_GUARD_AMQP_URL_VAR=$_pg_url_var "$_pg_py" -I "$_pg_dir/amqp_url.py") && [ -n "$_pg_merged" ]; then
            export "$_pg_url_var=$_pg_merged"
        else
            echo "plane-guard: keeping $_pg_url_var as it is" >&2
        fi
        unset _pg_merged
    fi
    unset _pg_url_var _pg_url_set _pg_py _pg_candidate
fi

# The start-up hook (sitecustomize) goes first; the image's own PYTHONPATH stays after it.
case ":${PYTHONPATH:-}:" in
    *":$_pg_dir/python:"*) ;;
    *) PYTHONPATH=$_pg_dir/python${PYTHONPATH:+:$PYTHONPATH} ;;
esac
export PYTHONPATH

unset _pg_dir
exec "$@"
