#!/usr/bin/env bash
# Make a PostgreSQL server answer on 127.0.0.1:${PGPORT:-5432} for tests and the demo.
# - If DATABASE_URL is set, or a server already answers, nothing is started.
# - Otherwise PostgreSQL is installed from Debian packages when missing, a cluster is
#   created if none exists, and it is started with pg_ctlcluster. It is deliberately
#   left running afterwards (stop it with: pg_ctlcluster <version> main stop).
# The superuser 'postgres' gets the password 'postgres' for TCP logins from 127.0.0.1.
set -euo pipefail
PORT="${PGPORT:-5432}"

if [[ -n "${DATABASE_URL:-}" ]]; then
  echo "postgres: using DATABASE_URL (nothing started)"
  exit 0
fi

answers() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p "$PORT"; }

if answers; then
  echo "postgres: already answering on 127.0.0.1:$PORT"
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: PostgreSQL is not installed; run as root or: apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "postgres: installing from Debian packages..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$VERSION main$"; then
  pg_createcluster "$VERSION" main -p "$PORT" >/dev/null
fi
pg_ctlcluster "$VERSION" main start || true
for _ in $(seq 1 60); do answers && break; sleep 0.5; done
if ! answers; then
  echo "error: PostgreSQL $VERSION did not start; see /var/log/postgresql/" >&2
  exit 1
fi
su postgres -c "psql -q -p $PORT -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
echo "postgres $VERSION: started on 127.0.0.1:$PORT (left running; stop: pg_ctlcluster $VERSION main stop)"
