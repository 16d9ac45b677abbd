"""CPU-path import stand-in (see scripts/cpu_stubs/README.md). Not vLLM."""
