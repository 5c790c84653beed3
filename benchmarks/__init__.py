"""Benchmarks (`make bench`). Each `bench_<area>.py` module defines
`async def run(env: BenchEnv) -> list[Result]`; results are printed as a table
with ratios against baselines measured in the same run, and saved as JSON."""
