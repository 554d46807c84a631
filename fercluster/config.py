"""Sweep configs: one strict loader from YAML to a typed, frozen config.

Every problem in a file is reported at once, each naming the key, the value received and what is
valid. Paths are relative to the current working directory, as with any command-line tool.
"""

from __future__ import annotations

# Over 400 lines: the whole config schema, one model per section, is read in one place (settings typed once)
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Sequence

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from fercluster.config_errors import format_problems, problem_lines
from fercluster.errors import ConfigError
from fercluster.overrides import annotate, apply_overrides
from fercluster.yaml_io import read_yaml

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
VARIANTS = ("none", "D", "A", "AD")
Variant = Literal["none", "D", "A", "AD"]


def _check_name(value: str) -> str:
    """A name that becomes a folder or a flag: never '.', '..' or an option ('-x')."""
    if not NAME_RE.match(value):
        raise ValueError("must be non-empty and use only letters, digits, '.', '_' and '-'")
    if value in (".", "..") or value.startswith("-"):
        raise ValueError("must not be '.' or '..' nor start with '-': it names folders (jobs/<name>, results/<name>)")
    return value


def _check_slurm_value(value: str) -> str:
    if CONTROL_RE.search(value):
        raise ValueError("must not contain newlines or other control characters")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
SlurmStr = Annotated[str, AfterValidator(_check_slurm_value)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Paths(Strict):
    jobs: Path = Path("jobs")  # submitit folders, coordinator state and logs: jobs/<sweep>/
    results: Path = Path("results")  # run directories, tables, report: results/<sweep>/
    data: Path = Path("data")  # default home of synthetic raw sets and prepared sets


class Synthetic(Strict):
    """Generate the raw set at ``root`` on first use (the embedded default)."""

    subjects: int = Field(40, ge=4, le=2000)  # CK+: subjects; TFD: identities
    seed: int = Field(0, ge=0)
    sequences_per_subject: int = Field(3, ge=1, le=20)  # CK+ only
    images_per_identity: int = Field(8, ge=1, le=200)  # TFD only
    unlabelled: int = Field(20, ge=0)  # TFD only: extra unlabelled images (-1) like the real file


class Dataset(Strict):
    kind: Literal["ckplus", "tfd"]
    root: Path  # CK+: the folder holding cohn-kanade-images/; TFD: the TFD_96x96.mat file
    prepared: Path | None = None  # default: <paths.data>/prepared/<dataset name>
    classes: Literal[6, 7, 8] = 8  # CK+: 8 or 6; TFD: 7
    crop: Literal["haar", "landmarks", "none"] = "haar"  # CK+ only
    synthetic: Synthetic | None = None

    @model_validator(mode="after")
    def _classes_match_kind(self) -> "Dataset":
        if self.kind == "tfd" and self.classes != 7:
            raise ValueError(f"classes: got {self.classes}; TFD has 7 classes")
        if self.kind == "ckplus" and self.classes not in (6, 8):
            raise ValueError(f"classes: got {self.classes}; CK+ has 8 or 6 classes")
        return self

    @property
    def folds(self) -> int:
        return 10 if self.kind == "ckplus" else 5


class GridEntry(Strict):
    dataset: Name
    folds: Literal["all"] | list[Annotated[int, Field(ge=0, le=9)]] = "all"
    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)


K_RE = re.compile(r"^(random|from_tune [A-Za-z0-9._-]+)$")


class Train(Strict):
    """The training settings of one job: typed once, read as attributes on the job side.

    Every default lives here. A job's id hashes the settings that differ from these defaults
    (``fercluster.train.spec.identity``), except the ones in ``RESULT_NEUTRAL``, which cannot
    change what a job computes; so a setting added later with a default keeps every job id.
    """

    # Settings that change how fast or where a job runs, never what it computes.
    RESULT_NEUTRAL: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "channels_last", "compile"})

    iterations: int = Field(31_000, ge=1)
    eval_every: int = Field(1_000, ge=1)  # evaluate (and keep a selectable checkpoint) this often
    checkpoint_every: int = Field(1_000, ge=1)  # full resumable checkpoint this often
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-5, ge=0)
    # k: a number, "random" (U[k_low, k_high) per job, drawn from its identity) or "from_tune <sweep>".
    k: float | str = "random"
    k_low: float = Field(0.2, gt=0)
    k_high: float = Field(1.2, gt=0)
    selection: Literal["2017", "2015"] = "2017"  # 2017: best validation; 2015: best test (optimistic)
    # When to evaluate (and keep a selectable checkpoint). round: before any update, every eval_every
    # and at the end (what Ray Tune's reports and the demo's curves need); code: after updates
    # 1, 1 + eval_every, ... as the authors' Monitor saved (1, 1001, ..., 30001; configs/paper.yaml).
    eval_at: Literal["round", "code"] = "round"
    # Augmentation's rotation/scale centre. code: the authors' Crop, S/2 = 48 in scikit-image's pixel
    # indices (half a pixel off); true: the image's true centre, 47.5.
    augment_centre: Literal["code", "true"] = "code"
    fc4_init: Literal["code", "fan_in"] = "code"  # code: sigma k/256 (authors' quirk); fan_in: k/32
    normalize: Literal["mean", "mean_std"] = "mean"  # 5x5 mean subtraction; mean_std also divides
    dropout: float = Field(0.5, ge=0, lt=1)  # used by variants D and AD
    width: float = Field(1.0, gt=0, le=4)  # multiplies the 64/128/256 filters and the 300 units
    image_size: int = Field(96, ge=16, le=96)  # images are resized to this (tests, demo)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    # TF32 for float32 matmuls and cuDNN convolutions on CUDA. False: IEEE fp32 as the original
    # (Theano) code computed; PyTorch's own default runs cuDNN convolutions in TF32 on recent GPUs.
    tf32: bool = False
    # True: every variant of a fold draws the same k and initial weights (a paired design);
    # False: each job draws its own from its identity (data set, fold, variant, seed), as the paper's runs.
    pair_variants: bool = False
    compile: bool = False
    channels_last: bool = True  # on CUDA only

    @field_validator("k")
    @classmethod
    def _k(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            if not K_RE.match(value):
                raise ValueError("must be a number, 'random' or 'from_tune <sweep name>'")
        elif not 0 < value <= 10:
            raise ValueError("must be in (0, 10]")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> "Train":
        if self.k_low >= self.k_high:
            raise ValueError(f"k_low ({self.k_low}) must be below k_high ({self.k_high})")
        if self.image_size % 4:
            raise ValueError(f"image_size: got {self.image_size}; must be a multiple of 4")
        return self

    def result_settings(self) -> dict[str, Any]:
        """The settings that differ from their defaults and can change a job's result (JSON values)."""
        changed = self.model_dump(mode="json", exclude_defaults=True)
        return {key: value for key, value in sorted(changed.items()) if key not in self.RESULT_NEUTRAL}


class AggregateSlurm(Strict):
    """Resources of the aggregation job (one node, no GPU); an unset one is the training job's."""

    partition: SlurmStr | None = None
    qos: SlurmStr | None = None
    account: SlurmStr | None = None
    time_min: int = Field(30, ge=1)  # wall time, minutes (reading the results and writing the report)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)


class Slurm(Strict):
    partition: SlurmStr | None = None
    account: SlurmStr | None = None
    qos: SlurmStr | None = None
    time_min: int = Field(60, ge=1)  # wall time per job, minutes
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0, le=16)  # >1: one task per GPU, DDP
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    constraint: SlurmStr | None = None
    array_parallelism: int = Field(64, ge=1)  # the %K of job arrays
    max_retries: int = Field(2, ge=0, le=20)  # bound for --retry-failed (pre-emptions do not count)
    max_timeout_requeues: int = Field(3, ge=0, le=100)  # submitit requeues a job this often after time-outs
    signal_delay_s: int = Field(120, ge=10)  # SIGUSR2 this long before the time limit
    # `status --watch` refreshes no more often than this (a shared cluster's sacct is rate-limited);
    # on errors it backs off, doubling up to 10 minutes
    watch_floor_s: float = Field(30.0, ge=1)
    mem_per_gpu_gb: float | None = Field(None, gt=0)  # --mem-per-gpu (instead of mem_gb)
    gpu_type: Name | None = None  # e.g. a100: --gpus-per-node=a100:<gpus_per_node>
    exclusive: bool = False  # --exclusive: whole nodes, no sharing with other jobs
    # shell lines run before the job, e.g. [module load cuda/12.1, conda activate fer]; fercluster's
    # own lines (the code snapshot on PYTHONPATH) come after them, so the snapshot is imported
    setup: list[SlurmStr] = Field(default_factory=list)
    extra: dict[Name, SlurmStr] = Field(default_factory=dict)  # more sbatch flags, e.g. {mail-type: END}
    # snapshot: jobs import the code copied at submission (jobs/<sweep>/code/<hash>), requeues and
    # retries too; live: whatever fercluster is installed when each job starts (a checkout: its state then).
    code: Literal["snapshot", "live"] = "snapshot"
    aggregate: AggregateSlurm = Field(default_factory=AggregateSlurm)
    # a submission whose sbatch gave no clear answer (a time-out), with accounting off: once this old
    # and not shown by squeue (this user's queued, running and recently ended jobs), never submitted
    pending_bound_s: float = Field(600.0, ge=0)
    # a RUNNING job whose progress.json has not moved for this long shows as stalled in `status`
    # (`sweep --requeue-stalled` requeues it); None: derived per job from its evaluation interval
    # (``stall_after_s``)
    stall_min: int | None = Field(None, ge=1)

    STALL_INTERVALS: ClassVar[int] = 3  # evaluation intervals without a progress write
    STALL_FLOOR_MIN: ClassVar[int] = 10  # never sooner (a slow flush, clock skew between hosts)

    def stall_after_s(self, eval_every: int, sec_per_iter: float | None) -> float | None:
        """Seconds without progress after which a running job is stalled: ``stall_min`` when set,
        else ``STALL_INTERVALS`` evaluation intervals (``eval_every`` x the measured seconds per
        iteration; a job writes progress.json once per interval) and at least ``STALL_FLOOR_MIN``
        minutes; None (not judged) when no time per iteration is known yet."""
        if self.stall_min is not None:
            return 60.0 * self.stall_min
        if sec_per_iter is None or sec_per_iter <= 0:
            return None
        return max(60.0 * self.STALL_FLOOR_MIN, self.STALL_INTERVALS * eval_every * sec_per_iter)

    @model_validator(mode="after")
    def _flags(self) -> "Slurm":
        problems = []
        managed = {k: why for k in sorted(self.extra) if (why := refused_flag(k))}
        if managed:
            why = ", ".join(f"{k} ({w})" for k, w in managed.items())
            problems.append(f"extra: got flags that fercluster manages: {why}; remove them from extra")
        for key, minutes in (("time_min", self.time_min), ("aggregate.time_min", self.aggregate.time_min)):
            if self.signal_delay_s >= minutes * 60:
                problems.append(
                    f"signal_delay_s ({self.signal_delay_s} s) must be below the time limit: {key} is {minutes} "
                    f"({minutes * 60} s), so the job would be told to stop as it starts; raise {key} or lower "
                    "signal_delay_s"
                )
        if self.mem_gb is not None and self.mem_per_gpu_gb is not None:
            problems.append("mem_gb and mem_per_gpu_gb: give one of them")
        if self.gpus_per_node == 0 and (self.gpu_type or self.mem_per_gpu_gb):
            problems.append("gpu_type and mem_per_gpu_gb need gpus_per_node > 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# sbatch flags fercluster sets (or must not be overridden): refused in slurm.extra, with the way to set them
_OWN = "fercluster sets it for arrays, logs and requeue"
MANAGED_FLAGS = {
    **dict.fromkeys(["array", "output", "error", "signal", "job-name", "open-mode", "requeue", "wckey"], _OWN),
    **dict.fromkeys(["dependency", "ntasks-per-node", "ntasks", "parsable", "wrap", "chdir"], _OWN),
    "gpus-per-node": "use slurm.gpus_per_node and slurm.gpu_type",
    "gpus": "use slurm.gpus_per_node and slurm.gpu_type",
    "gres": "use slurm.gpus_per_node and slurm.gpu_type",
    "time": "use slurm.time_min",
    "nodes": "use slurm.nodes",
    "cpus-per-task": "use slurm.cpus_per_task",
    "mem": "use slurm.mem_gb",
    "mem-per-gpu": "use slurm.mem_per_gpu_gb",
    "partition": "use slurm.partition",
    "account": "use slurm.account",
    "qos": "use slurm.qos",
    "constraint": "use slurm.constraint",
    "exclusive": "use slurm.exclusive",
    # not set by fercluster, but they break what it relies on
    "no-requeue": "fercluster requeues jobs after pre-emption and time-outs",
    "hold": "held jobs never start until released by hand",
    "mem-per-cpu": "use slurm.mem_gb or slurm.mem_per_gpu_gb",
    "gpus-per-task": "use slurm.gpus_per_node: one task per GPU",
    "wait": "sbatch would not return until the jobs end",
    "test-only": "nothing would be submitted",
}


def refused_flag(key: str) -> str | None:
    """Why ``slurm.extra`` refuses ``key`` (None: it passes). sbatch reads any unique prefix of a
    long option as that option (``dep`` is ``--dependency``), so a prefix of a refused flag is refused too."""
    flag = key.lower().replace("_", "-")
    if flag in MANAGED_FLAGS:
        return MANAGED_FLAGS[flag]
    matches = [f for f in MANAGED_FLAGS if f.startswith(flag)]
    if not matches:
        return None
    named = ", ".join(f"--{f}" for f in matches)
    return (
        f"sbatch reads it as {named}: {MANAGED_FLAGS[matches[0]]}"
        if len(matches) == 1
        else f"a prefix of {named}, which sbatch refuses or takes for one of them"
    )


class SearchParam(Strict):
    type: Literal["uniform", "loguniform", "choice", "grid"] = "uniform"
    low: float | None = None
    high: float | None = None
    values: list[float] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "SearchParam":
        if self.type in ("uniform", "loguniform"):
            if self.low is None or self.high is None or self.low >= self.high:
                raise ValueError(f"{self.type} needs low < high")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        elif not self.values:
            raise ValueError(f"{self.type} needs a non-empty list of values")
        return self


class Tune(Strict):
    datasets: list[Name] = Field(min_length=1)
    folds: list[Annotated[int, Field(ge=0, le=9)]] = Field(default_factory=lambda: [0], min_length=1)
    variant: Variant = "AD"
    space: dict[Literal["k", "lr", "weight_decay", "momentum", "dropout"], SearchParam] = Field(
        default_factory=lambda: {"k": SearchParam(type="uniform", low=0.2, high=1.2)}
    )
    search: Literal["random", "grid"] = "random"
    num_samples: int = Field(8, ge=1)
    metric: Literal["val_acc"] = "val_acc"
    grace_period: int = Field(2_000, ge=1)  # ASHA, in training iterations
    reduction_factor: int = Field(2, ge=2)
    gpus_per_trial: float = Field(0.25, ge=0, le=8)
    cpus_per_trial: float = Field(1, gt=0)
    max_concurrent: int = Field(4, ge=1)
    seed: int = Field(0, ge=0)


class Analysis(Strict):
    top_n: int = Field(10, ge=1, le=100)
    filters: list[Annotated[int, Field(ge=0)]] | None = None  # None: choose 10 automatically
    n_filters: int = Field(10, ge=1, le=256)
    kl_bins: int = Field(20, ge=2, le=1000)
    # KL smoothing (open in the paper, see fercluster/analysis/kl.py): kl_eps pseudo-counts per bin on
    # average, spread like the pooled histogram ("pooled", default) or evenly ("uniform"; with a tiny
    # kl_eps such as 1e-6 this is the spec's literal "add a small epsilon to every bin").
    kl_eps: float = Field(0.5, gt=0)
    kl_prior: Literal["pooled", "uniform"] = "pooled"
    # planted-truth agreement: over all conv3 filters ("all", default) or only the shown ones
    agreement_filters: Literal["all", "shown"] = "all"
    # guided-backprop masks (fercluster/analysis/filters.py): "relu" (default, the spec's certain part) passes
    # each ReLU below conv3 only where the backward signal and the forward input are both positive; "pixel"
    # also masks the pixel map by (map > 0)·(input > 0) (the authors' guided layer on conv1's reconstruction,
    # open in the spec); "none": the plain gradient of the unit
    guided_mask: Literal["none", "relu", "pixel"] = "relu"
    min_positive: int = Field(5, ge=1)
    shuffle_seed: int = Field(0, ge=0)
    jobs: dict[Name, Annotated[str, AfterValidator(_check_name)]] = Field(default_factory=dict)
    # jobs: per data set, the variant whose fold-0 job is visualised (default AD)


class SweepConfig(Strict):
    name: Name
    paths: Paths = Field(default_factory=Paths)
    datasets: dict[Name, Dataset] = Field(min_length=1)
    grid: list[GridEntry] = Field(default_factory=list)
    train: Train = Field(default_factory=Train)
    train_overrides: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    slurm: Slurm = Field(default_factory=Slurm)
    tune: Tune | None = None
    analysis: Analysis = Field(default_factory=Analysis)
    _trains: dict[str, Train] = PrivateAttr(default_factory=dict)  # per data set, overrides applied
    _source: str | None = PrivateAttr(default=None)  # the YAML file it was loaded from (resolved)
    _overrides: tuple[str, ...] = PrivateAttr(default=())  # key=value overrides applied to it

    @model_validator(mode="after")
    def _references(self) -> "SweepConfig":
        problems = []
        for i, entry in enumerate(self.grid):
            if entry.dataset not in self.datasets:
                problems.append(f"grid.{i}.dataset: got {entry.dataset!r}; valid: {sorted(self.datasets)}")
            elif entry.folds != "all":
                n = self.datasets[entry.dataset].folds
                bad = [f for f in entry.folds if f >= n]
                if bad:
                    problems.append(f"grid.{i}.folds: got {bad}; {entry.dataset} has folds 0..{n - 1}")
        for name, overrides in self.train_overrides.items():
            if name not in self.datasets:
                problems.append(f"train_overrides.{name}: not a data set; valid: {sorted(self.datasets)}")
                continue
            try:  # validated now, as strictly as train: itself, so a bad override fails at load
                self._trains[name] = Train.model_validate_json(
                    json.dumps({**self.train.model_dump(mode="json"), **overrides})
                )
            except ValidationError as exc:
                problems += problem_lines(exc, Train, prefix=f"train_overrides.{name}.")
        if self.tune is not None:
            for name in self.tune.datasets:
                if name not in self.datasets:
                    problems.append(f"tune.datasets: got {name!r}; valid: {sorted(self.datasets)}")
        if not self.grid and self.tune is None:
            problems.append("grid: empty and no tune: section; a sweep needs one of them")
        if problems:
            raise ValueError("\n".join(problems))  # one line each in the error
        return self

    def prepared_dir(self, dataset: str) -> Path:
        ds = self.datasets[dataset]
        return ds.prepared if ds.prepared is not None else self.paths.data / "prepared" / dataset

    def train_for(self, dataset: str) -> Train:
        """The training settings of one data set: ``train`` with its ``train_overrides`` applied."""
        return self._trains.get(dataset, self.train)

    @property
    def source(self) -> str | None:
        """The YAML file this config was loaded from (absolute), None if built from a mapping."""
        return self._source

    @property
    def overrides(self) -> tuple[str, ...]:
        """The ``key=value`` overrides applied to the file (``--set``), in order."""
        return self._overrides

    @property
    def jobs_dir(self) -> Path:
        return self.paths.jobs / self.name

    @property
    def results_dir(self) -> Path:
        return self.paths.results / self.name


def parse_config(data: Any, source: str = "<config>", overrides: Sequence[str] = ()) -> SweepConfig:
    """Validate a mapping (e.g. parsed YAML) into a frozen ``SweepConfig``.

    ``overrides``: ``key=value`` strings (``train.iterations=500``, ``grid.0.folds=[0,1]``) applied
    to the mapping first (``fercluster.overrides``); their problems and the config's are reported
    together, in one ConfigError.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if isinstance(overrides, str):
        overrides = [overrides]  # one override given bare: not its characters
    overrides = tuple(overrides)
    data, problems = apply_overrides(data, overrides)
    try:
        # Validated as JSON in strict mode: no silent coercion (``true`` is not an int, "40" is not
        # a number), while paths may be written as strings.
        cfg = SweepConfig.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        problems += annotate(problem_lines(exc, SweepConfig), overrides)
    if problems:
        raise ConfigError(f"{source}: " + format_problems(problems)) from None
    cfg._overrides = overrides
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> SweepConfig:
    """Load and validate a sweep config from a YAML file, with ``key=value`` ``overrides`` applied."""
    path = Path(path)
    data = read_yaml(path)  # one ConfigError line: not found, a folder, unreadable, a syntax error
    cfg = parse_config(data, source=str(path), overrides=overrides)
    cfg._source = str(path.resolve())
    return cfg
