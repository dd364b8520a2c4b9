"""The lm-eval glue: the `sae` backend, the Task base classes, the run's shared stages, store and
ledger, and the run context tasks see."""
