// The benchmark's load generator: standard library only.
module ray-ft-webhook/bench/loadgen

go 1.25.0
