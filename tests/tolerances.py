"""What reproducibility the project promises, and the tolerances the tests use beyond it.

Bit-exact: the same objects run again in one process, on one device, with one thread count (a seed
repeats a run exactly). Everything else can differ in the last bits of float32 and is compared with
these tolerances: a model saved and loaded again (new tensors, new memory layout), another
implementation of the same maths (diffusers' own pipeline), another process, thread count or processor
(Intel and AMD kernels sum in different orders and vector widths). Measured on an AMD EPYC with 2
threads: a reloaded tiny CLIP encoder's output moved by 2.4e-7, UNet outputs by ~1e-6, decoded frames
after a few sampler steps by up to 5e-5.
"""

# A model's raw output (unit-scale activations, e.g. the UNet's v): float32 epsilon (1.2e-7) grown
# through a few dozen layers of reordered sums.
MODEL_ATOL = 1e-5
# Decoded frames in [0, 1] after a few sampler steps: the model's differences, amplified by each
# step's 1/sigma and the decoder. 2x the largest difference measured; still 100x below one 8-bit level.
FRAME_ATOL = 1e-4
