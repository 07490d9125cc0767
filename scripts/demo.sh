#!/usr/bin/env bash
# `make demo`: the north-south story in a netns lab, in well under a minute. Three nodes on a LAN
# bridge run `ferrite agent`; one folder of plain YAML holds a LoadBalancerIPPool, an
# L2AnnouncementPolicy and a LoadBalancer Service; the agents allocate an address from the pool
# and elect one node to answer ARP for it; a client on the LAN (no route, it just ARPs) reaches
# the pods on every node through it; the owner's agent is killed (kill -9) and another node
# takes the address over while the client's request loop goes on; the agent comes back and
# takes it back. `ferrite-lab demo` does the work (see tests/lab/src/demo.rs) and tears
# everything down at the end, also on failure or Ctrl-C.
set -euo pipefail

FERRITE=${1:-target/release/ferrite}
LAB=${2:-target/release/ferrite-lab}
FERRITE=$(realpath "$FERRITE")
LAB=$(realpath "$LAB")
exec "$LAB" demo --ferrite "$FERRITE"
