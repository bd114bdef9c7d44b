"""``make bench`` / ``python -m bench``: performance figures of the profile service, as ratios measured in one run.

Every server runs in its own process, as in production, and the load generator in yet another one, so client and
server never share a GIL. Figures are ratios against a bare baseline (a grpc.aio echo server, a direct
``put_object``) measured in the same run on the same machine, plus absolute tail latencies.

Modules:

* :mod:`bench.common` -- figures, tables, ports, child processes;
* :mod:`bench.echo_server` -- the bare grpc.aio baseline server (run as ``python -m bench.echo_server``);
* :mod:`bench.loadgen` -- the closed-loop load generator (run as ``python -m bench.loadgen``);
* :mod:`bench.services` -- starting the profile service process on SQLite + filesystem or Postgres + S3 (moto);
* :mod:`bench.get_profile_load` -- GetProfile throughput and latency against the echo baseline;
* :mod:`bench.upload` -- AddSample of a 5-minute recording against a direct put of the same bytes.
"""
