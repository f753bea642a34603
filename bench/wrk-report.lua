-- wrk reporter used by bench/run.sh: after the run, print ONE machine-readable
-- line so the script does not have to parse wrk's human output (whose units
-- switch between us/ms/s).  Latencies are in microseconds.
--   WRKRESULT requests duration_us p50_us p99_us connect read write status timeout
-- `status` = responses with HTTP status > 399 (wrk's definition).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %.0f %.0f %.0f %.0f %d %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
