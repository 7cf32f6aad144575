#!/usr/bin/env bash
# Starts etcd and a real kube-apiserver on loopback for validating manifests (server-side dry run)
# and writes $DIR/kubeconfig. No kubelet runs: objects are validated and stored, pods never start.
#   DIR=<state dir> APISERVER=<kube-apiserver binary> ETCD_PORT=<p> ETCD_PEER_PORT=<p> API_PORT=<p> run-apiserver.sh
# Prints "kubeconfig: <path>" once the API server answers /readyz. Stop it with
#   kill $(cat $DIR/apiserver.pid) $(cat $DIR/etcd.pid)
# (After /work/shared/tools/kubernetes/run-apiserver.sh, with ports and paths as parameters.)
set -euo pipefail
DIR=${DIR:?the state directory}
APISERVER=$(readlink -f "${APISERVER:?the kube-apiserver binary}")
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
API_PORT=${API_PORT:-16443}
command -v etcd >/dev/null || { echo "etcd is missing: apt-get install -y etcd-server" >&2; exit 1; }
mkdir -p "$DIR/pki" && cd "$DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kube-apiserver -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout pki/apiserver.key -out pki/apiserver.crt 2>/dev/null
openssl genrsa -out pki/sa.key 2048 2>/dev/null
token=$(openssl rand -hex 16)
echo "$token,admin,admin,system:masters" >pki/tokens.csv
nohup etcd --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" >etcd.log 2>&1 &
echo $! >etcd.pid
nohup "$APISERVER" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --tls-cert-file=pki/apiserver.crt --tls-private-key-file=pki/apiserver.key --token-auth-file=pki/tokens.csv \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=pki/sa.key --service-account-signing-key-file=pki/sa.key \
  --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=RBAC >apiserver.log 2>&1 &
echo $! >apiserver.pid
cat >kubeconfig <<EOM
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
EOM
for _ in $(seq 1 240); do
  if curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
    echo "kubeconfig: $DIR/kubeconfig"
    exit 0
  fi
  kill -0 "$(cat apiserver.pid)" 2>/dev/null || break
  sleep 0.5
done
echo "the API server did not become ready; the end of $DIR/apiserver.log:" >&2
tail -5 apiserver.log >&2
exit 1
