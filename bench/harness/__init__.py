"""What every benchmark scenario shares: one place for each of these.

* `stats`: percentiles, repetitions summed up as median with min..max, paired ratios;
* `procfs`: CPU seconds and resident memory of processes, process trees (Linux /proc);
* `cores`: how the cores are split between measured servers, upstreams and the load
  generator, and pinning (taskset / sched_setaffinity);
* `http_load`: `wrk` and `hey`, run and read;
* `grpc_load`: a Python gRPC client for `GetProduct` (closed loop or paced), as a process;
* `mesh`: one mesh (`mesh up`) for the scenarios that need it, extra gateways in front of
  its upstreams, a signed-in user, the OTLP sink for tracing;
* `machine`: git sha, dependency versions, CPU model and core count;
* `report`: the structured results and the Markdown + JSON report under bench/results/;
* `runner`: settings, repetitions and the command line of `python -m bench` and of each
  scenario module run alone.
"""
