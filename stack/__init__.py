"""The local stack (Redis, Label Studio, backend, worker as processes: `processes`) and the one harness that
drives Label Studio like an admin and an annotator (`annotator`, `http`, `images`, `digits`, `settings`,
`runs`): used by `lsal demo`, the benchmarks and the end-to-end tests alike."""
