"""Code generation: IR ops on regions of cores -> per-core instruction streams (docs/compiler.md)."""
