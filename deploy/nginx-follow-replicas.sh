#!/bin/sh
# Runs nginx in the foreground and reloads it whenever the replicas' addresses change.
#
# nginx looks up the upstream's `server api:8000` only when it starts or reloads, so a replica
# re-created with a new address, or one replica more, would never get a request. Every
# FOLLOW_SECONDS (default 5) this looks up FOLLOW_NAMES (default "api") the way nginx does
# (getaddrinfo: /etc/hosts, then the container network's DNS) and reloads nginx when the answer
# has changed. A reload is graceful: requests under way finish on the old workers. While a name
# has no address at all (every replica down), nginx keeps the addresses it has.
#
#   sh nginx-follow-replicas.sh [nginx options]     e.g. -g 'daemon off;' (required: foreground)
#
# The options are nginx's own, given again with `-s reload`. A SIGQUIT (graceful; the official
# nginx image's stop signal), SIGTERM or SIGINT is passed on to nginx. POSIX sh: runs in the
# official Alpine image as in Debian's.
set -eu
names=${FOLLOW_NAMES:-api}
every=${FOLLOW_SECONDS:-5}

addresses() {
    for name in $names; do
        # glibc's getent knows "ahosts" (all addresses, IPv4 and IPv6); musl's may not.
        getent ahosts "$name" 2>/dev/null || getent hosts "$name" 2>/dev/null || true
    done | awk '{ print $1 }' | sort -u
}

nginx "$@" &
nginx=$!
for signal in QUIT TERM INT; do
    # shellcheck disable=SC2064 # the signal's name is meant to be expanded now
    trap "kill -$signal $nginx 2>/dev/null || true" "$signal"
done

known=$(addresses)
while kill -0 "$nginx" 2>/dev/null; do
    sleep "$every" &
    wait $! || true # a signal ends the wait early; the loop then sees nginx go
    now=$(addresses)
    if [ -n "$now" ] && [ "$now" != "$known" ] && kill -0 "$nginx" 2>/dev/null; then
        echo "nginx-follow-replicas: the addresses of $names changed; reloading nginx" >&2
        nginx "$@" -s reload && known=$now
    fi
done
wait "$nginx"
