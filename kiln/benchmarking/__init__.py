"""What `kiln bench` measures: workloads, the engine and HF baselines, start-up phases, stats."""
