#!/bin/sh
# Form the compose file's Redis Cluster from its six nodes (three masters, a replica each),
# unless it is formed already; then wait until every node says the cluster is ok.
set -eu
first_host=${1%:*}
first_port=${1#*:}
if ! redis-cli -h "$first_host" -p "$first_port" cluster info | grep -q '^cluster_known_nodes:6'; then
  redis-cli --cluster create "$@" --cluster-replicas 1 --cluster-yes
fi
for node in "$@"; do
  until redis-cli -h "${node%:*}" -p "${node#*:}" cluster info | grep -q '^cluster_state:ok'; do
    sleep 0.2
  done
done
echo "redis cluster ok"
