"""Import TensorFlow without the start-up lines its C++ libraries print on a CPU machine.

`import tensorflow` (with seqio's `tensorflow` wheel beside `tensorflow-cpu`) writes "Could not find
cuda drivers", "oneDNN custom operations are on", "failed call to cuInit" and "All log messages
before absl::InitializeLog()" straight to file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` applies:
nothing a user can act on. `import_tensorflow()` imports it with descriptor 2 pointed at /dev/null
(Python exceptions still propagate: a failed import raises as usual) and sets
`TF_CPP_MIN_LOG_LEVEL=2` (kernel warnings such as the traceback of every failed `py_func`) unless
the user set it. It also hides GPUs from TensorFlow, which only runs the input pipeline. Call it
before the first import of tensorflow or seqio (`SeqioSource` does).
"""
from __future__ import annotations

import os
import sys


def import_tensorflow():
    """The `tensorflow` module, imported now (quietly) unless it already is."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # pylint: disable=import-outside-toplevel
        # tf.data runs on the host: TF must not take accelerator memory from JAX (as T5X and
        # MaxText do). Enumerating the devices here is also where TF's cuInit fails on a CPU machine.
        tensorflow.config.set_visible_devices([], "GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow
