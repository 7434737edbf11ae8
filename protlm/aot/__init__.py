"""Ahead-of-time compilation for TPU slices without TPUs (``--dry_run --topology``).

``topology`` gives a slice's abstract devices (libtpu), ``hlo`` reads the compiled program,
``counts`` totals its per-device FLOPs, HBM and collective bytes (scanned layers included),
``roofline`` bounds the step time and MFU, ``report`` compiles and reports (docs/scaling.md).
"""
