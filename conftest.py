"""Settings every test and doctest needs, wherever pytest is pointed (tests/ or initwatch/)."""

import os

# DeepSpeed (initwatch[deepspeed]), once installed, is imported by accelerate inside the Trainer
# doctests; without a GPU its accelerator auto-detection prints a warning to stdout, which a
# doctest reads as output. Naming the CPU accelerator skips the detection and the warning.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
