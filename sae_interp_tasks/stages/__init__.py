"""The pipeline stages, in the order a latent goes through them: corpus -> subject model and SAE ->
activation pass -> latent selection and example splits -> explanations (and the steering and
self-explanation stages some tasks add). Stage modules know nothing of lm-eval or of the backend."""
