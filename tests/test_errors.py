"""The one-line messages entry points print for errors a user can fix (`protlm.errors`)."""
from protlm import errors
from protlm.data.fasta import FastaFormatError

LINE = "/d/x.fasta:12: digit '1' at column 4 of a sequence line (record 'p'). Fix: remove position numbers"


def test_a_fasta_error_wrapped_by_tf_data_is_found_in_the_text():
    wrapped = ValueError("{{function_node __wrapped__IteratorGetNext}} FastaFormatError: " + LINE
                         + "\nTraceback (most recent call last):\n  File ...\n\t [[{{node PyFunc}}]]")
    assert errors.user_message(wrapped) == LINE
    assert errors.exit_code(wrapped) == 2


def test_chained_and_gin_wrapped_errors():
    try:
        try:
            raise FastaFormatError("/d/x.fasta", 12, "digit '1' at column 4 of a sequence line",
                                   "remove position numbers", "p")
        except FastaFormatError as e:
            raise RuntimeError("pipeline failed") from e
    except RuntimeError as outer:
        assert errors.user_message(outer) == LINE
    gin_wrapped = errors.ConfigError("TRAIN_STEPS must be positive\n  In call to configurable 'train' (<f>)")
    assert errors.user_message(gin_wrapped) == "TRAIN_STEPS must be positive"
    assert errors.user_message(FileNotFoundError(2, "No such file or directory", "/x/y")) == \
        "/x/y: No such file or directory"
    assert errors.exit_code(errors.CheckpointSaveError("disk full")) == 1


def test_a_bug_is_not_a_user_error():
    assert errors.user_message(KeyError("x")) is None
    assert errors.user_message(ValueError("shapes do not match")) is None


def test_data_layer_errors_of_the_shard_pipeline_and_checkpoints_are_one_line():
    from protlm.checkpoints import DataStateError
    from protlm.data.exclusions import ExclusionFormatError
    from protlm.data.splits import EmptySplitError

    for exc in (EmptySplitError("the validation split of 'x.fa' has no records"),
                ExclusionFormatError("hits.m8:1: expected 12 columns"),
                DataStateError("data/process_0: the saved data position cannot be restored")):
        assert errors.user_message(exc) == str(exc)
        assert errors.exit_code(exc) == 2
