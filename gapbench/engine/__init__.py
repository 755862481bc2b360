"""The engine: budget, FLOPs, the step loop, the Trainer, devices and data parallelism."""
