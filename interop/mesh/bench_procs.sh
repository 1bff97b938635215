#!/bin/bash
# Mesh throughput with separate processes, as deployed: alice, gate and carol are `ugate run`
# nodes configured by ugate.json only; iperf3 runs direct and through alice's port-forward
# listeners (the Gate's capture path): P1 → mesh:gate (/dm/) → iperf3; P2 → carol's ID routed
# to mesh:gate → carol's reverse tunnel; P3 → carol's mangled name → gate's SNI relay into one
# of carol's registrations (HBONE over alice↔carol mTLS). Loopback only, ephemeral ports.
# Usage: [FWD=copy|splice] [T=seconds] [ROUNDS=n] interop/mesh/bench_procs.sh [path/to/ugate]
set -u
U=${1:-.build/release/ugate}
D=$(mktemp -d /tmp/ugate-bench-procs.XXXXXX)
trap 'kill $AP $CP $GP $IP 2>/dev/null; rm -rf $D' EXIT
AP=; CP=; GP=; IP=
FWD=${FWD:-copy}
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
I=$(fp); P1=$(fp); P2=$(fp); P3=$(fp);
iperf3 -s -p $I >/dev/null 2>&1 & IP=$!
idof() { $U id --identity-dir $D/$1 --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'; }
A=$(idof alice); G=$(idof gate); C=$(idof carol)
CL=$(echo $C | tr A-Z a-z)
echo "{\"forwarder\": \"$FWD\", \"mesh\": {\"peers\": [{\"id\": \"$A\", \"egress\": true}, {\"id\": \"$C\"}]}}" > $D/gate.json
$U run --config $D/gate.json --base-port 0 --identity-dir $D/gate > $D/gate.out 2>$D/gate.err & GP=$!
sleep 1.5
GM=127.0.0.1:$(grep mesh-dm $D/gate.out | head -1 | grep -o ':[0-9]*' | tail -1 | tr -d :)
echo "{\"mesh\": {\"peers\": [{\"id\": \"$G\", \"name\": \"gw\", \"addresses\": [\"$GM\"], \"egress\": true}, {\"id\": \"$A\", \"egress\": true}],
  \"relays\": [{\"gateway\": \"gw\", \"poolSize\": 2}], \"reverseTunnels\": [\"gw\"]}}" > $D/carol.json
$U run --config $D/carol.json --base-port 0 --identity-dir $D/carol > $D/carol.out 2>$D/carol.err & CP=$!
echo "{\"mesh\": {\"peers\": [{\"id\": \"$G\", \"name\": \"gate\", \"addresses\": [\"$GM\"]},
   {\"id\": \"$C\", \"name\": \"carol\", \"addresses\": [\"$GM\"], \"transport\": \"hbone\"}]},
 \"listeners\": {\":$P1\": {\"forwardTo\": \"127.0.0.1:$I\"}, \":$P2\": {\"forwardTo\": \"$C:$I\"},
                 \":$P3\": {\"forwardTo\": \"$CL.default.cluster.local:$I\"}},
 \"routes\": [{\"dest\": \"127.0.0.1:$I\", \"to\": \"mesh:gate\"}, {\"dest\": \"$C\", \"to\": \"mesh:gate\"}]}" > $D/alice.json
$U run --config $D/alice.json --base-port 0 --identity-dir $D/alice > $D/alice.out 2>$D/alice.err & AP=$!
sleep 3
run() { iperf3 -c 127.0.0.1 -p $1 -t ${T:-5} -J 2>/dev/null | python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception as e: print("fail")'; }
for r in $(seq 1 ${ROUNDS:-2}); do
  echo "round $r forwarder=$FWD direct $(run $I) h2-dm $(run $P1) reverse $(run $P2) sni-relay $(run $P3)"
done
grep -h -i "error\|warn" $D/*.err | head -5
