"""The paper's downstream evaluation on frozen features (see docs/downstream.md).

datasets (loaders for ../shared/data), encodings (one-hot, BLOSUM62 baselines), features (h5 or
encoding feature sources), probes (CNN / FFN, flax + optax), metrics (Q3/Q8/Q10/Q2, bootstrap CI),
plots, secondary_structure and localization (the protocols), report (tables), main (the CLI).
"""
