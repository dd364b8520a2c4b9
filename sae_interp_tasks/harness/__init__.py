"""The lm-eval glue: the `sae` backend, the Task base classes, the per-run memo and the run context
tasks see."""
