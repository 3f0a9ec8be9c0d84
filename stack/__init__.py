"""The local stack (Redis, Label Studio, backend, worker as processes) and the one harness that drives Label
Studio like an annotator: used by `lsal demo`, the benchmarks and the end-to-end tests alike."""
