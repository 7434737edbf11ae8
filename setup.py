"""protlm: ProtTrans protein language models in JAX/Flax (ProtT5, ProtBert), TPU/GPU/CPU."""
from setuptools import find_packages, setup

# Ranges below are the ones this project is tested with: Python 3.11 (CPU, jax 0.10.x) and
# Python 3.12 (GPU, jax 0.11.x). Keep the lower bounds at versions that have been run.
CORE = [
    "jax>=0.10.0,<0.12",
    "jaxlib>=0.10.0,<0.12",
    "flax>=0.12,<0.14",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "gin-config>=0.5.0,<0.6",
    "numpy>=1.26,<3",
    "h5py>=3.10,<4",
    "tqdm>=4.66,<5",
    "tensorboardX>=2.6,<3",
]
# The data layer (seqio / tf.data, the Apache Beam sharding pipeline). Not needed to train from
# arrays, embed or export: the GPU machine runs without it. `[tfrecord]` adds the CRC package
# Beam's TFRecord writer needs (seqio's Beam cache, seqio.scripts.cache_tasks_main).
DATA = [
    "seqio>=0.0.19,<0.1",
    "tensorflow-cpu>=2.18,<2.22",
    "tensorflow-datasets>=4.9.6,<5",
    "apache-beam[tfrecord]>=2.77,<3",
]
HF = [
    "torch>=2.13.0,<2.15",
    "transformers>=5.0,<6",
    "safetensors>=0.4.5",
    # 0.2.3's generated protobuf code needs protobuf 7; Apache Beam needs protobuf < 7.
    "sentencepiece>=0.2.0,<0.2.3",
    "tokenizers>=0.23.1,<0.24",     # tokenizer.json of exported ProtAlbert (protlm/hf/albert.py)
    "protobuf>=4.25",
]
EVAL = [
    "scikit-learn>=1.4,<2",
    "matplotlib>=3.8,<4",
]
DEV = [
    "pytest>=8,<10",
    "pytest-xdist>=3.5,<4",
    "pytest-timeout>=2.3,<3",
]

setup(
    name="protlm",
    version="0.1.0",
    description="ProtTrans protein language models (ProtT5, ProtBert) in JAX/Flax, T5X-style.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["protlm", "protlm.*", "tasks", "tasks.*"]),
    include_package_data=True,
    # XLA:GPU target configs of `--dry_run --topology=h100:N` (protlm.aot.topology).
    package_data={"protlm.aot": ["gpu_targets/*.txtpb"]},
    install_requires=CORE + DATA + EVAL,
    # tpu: Google's libtpu, matched to the installed jax by jax's own extra. Needed on TPU VMs
    # and for `--dry_run --topology=...` (compiling for a TPU slice on any machine).
    extras_require={"hf": HF, "dev": DEV, "gpu": ["jax[cuda12]>=0.10.0,<0.12"],
                    "tpu": ["jax[tpu]>=0.10.0,<0.12"]},
    entry_points={
        "console_scripts": [
            "protlm-train=protlm.train:main",
            "protlm-embed=protlm.embed:main",
            "protlm-export-hf=protlm.export_hf:main",
            "protlm-import-hf=protlm.import_hf:main",
            "protlm-downstream=protlm.downstream.main:main",
            "protlm-summary=protlm.models.summary:main",
        ]
    },
)
