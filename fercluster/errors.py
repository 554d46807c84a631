"""The project's exceptions. Library code raises these; only the CLI turns them into exit codes."""


class FerclusterError(Exception):
    """Base class: a problem the user can act on, with a message that says what to do."""


class ConfigError(FerclusterError):
    """A sweep config that does not validate (all problems listed in one message)."""


class DataError(FerclusterError):
    """A data set, raw or prepared, that is missing, malformed or does not match the config."""


class CheckpointError(FerclusterError):
    """A checkpoint that is corrupt or belongs to another job."""


class TrainingError(FerclusterError):
    """Training stopped for a reason of its own (e.g. a NaN loss)."""


class SlurmError(FerclusterError):
    """A SLURM command failed or the cluster is not reachable."""


class CodeError(FerclusterError):
    """The code a job should run: a snapshot that is missing, or not what the job imported."""


class AnalysisError(FerclusterError):
    """Aggregation cannot produce anything (e.g. no completed job)."""


class StoreError(FerclusterError):
    """A file of a sweep's folder (``state.json``, ...) that does not read: names the file and the fix."""
