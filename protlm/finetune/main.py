"""``python -m protlm.finetune``: a fine-tuning run (gin/runs/finetune.gin), then its test sets.

    python -m protlm.finetune --gin_file=gin/finetune_quickstart.gin \\
        --gin.INIT_CHECKPOINT="'runs/quickstart'" --gin.MODEL_DIR="'runs/ft_ss_lora'" \\
        --gin.MODE="'lora'" --gin.TASK="'secondary_structure'" --gin.HEAD="'cnn'"

Same flags as ``python -m protlm.train`` (it runs the training, resumes, ``--dry_run``). After a
completed run with a task, the test sets are scored as ``protlm.downstream`` scores its probes:
``MODEL_DIR/results.json`` and ``results.md``; with ``EXPORT_DIR`` set, the LoRA-merged backbone
is written there as an ordinary protlm model directory (``python -m protlm.export_hf`` reads it).
"""
from __future__ import annotations

import logging
import pathlib
import sys
from typing import Any, Optional

from protlm import train as train_cli


def test_run(model_dir: str, model: Any, task: Optional[str], data_root: Optional[str] = None,
             limit: Optional[int] = None, export_dir: Optional[str] = None,
             name: Optional[str] = None) -> dict:
    """Score the latest checkpoint of `model_dir` on the task's test sets (gin-configured with
    the same macros as the run) and write results.json / results.md beside the checkpoints."""
    from protlm import checkpoints  # noqa: PLC0415
    from protlm.downstream import report  # noqa: PLC0415
    from protlm.finetune import evaluate  # noqa: PLC0415

    params, _ = checkpoints.load_params(model_dir)
    results = {}
    if task is not None:
        results = evaluate.evaluate(model, params, task, data_root, limit)
        results.update(name=name or f"{model.mode} {model.head_name}", mode=model.mode,
                       head=model.head_name, step=checkpoints.latest_step(model_dir))
        out = pathlib.Path(model_dir) / "results.json"
        report.write_json(out, results)
        report.write_text(out.with_suffix(".md"), report.run_table(results))
        print(report.run_table(results))
    if export_dir:
        evaluate.export_merged(model, params, export_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result = train_cli.train(argv)
    code = train_cli.exit_code(result)
    if code or result.get("status") != "done":
        return code
    import gin  # noqa: PLC0415

    gin.get_configurable(test_run)()
    logging.getLogger(__name__).info("fine-tuning done at step %d", result["step"])
    return 0
