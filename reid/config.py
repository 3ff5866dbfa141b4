"""One typed configuration (OmegaConf structured config), at most two levels deep.

YAML files hold only what differs from these defaults; a file may name a parent with
``_base_: relative/path.yaml``. Command-line overrides are ``section.key=value``. Unknown
sections or keys are errors naming the key and the valid ones. ``config_yaml`` is the
resolved configuration saved next to every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from .arguments import check_device
from .data import LOADERS
from .data.samplers import SAMPLERS
from .engine.build import AMP_MODES, OPTIMIZERS, SCHEDULERS
from .errors import ReidError
from .evaluation.rank import AP_MODES, METRICS
from .heads import ALL_HEAD_OPTIONS, CENTER_INITS, CENTER_UPDATES, HEADS, WEIGHT_MODES
from .heads.centers import CenterSettings
from .models.backbone import TORCHVISION
from .models.pooling import POOLINGS
from .optional import require


@dataclass
class DataConfig:
    root: str = "datasets/synthetic"  # Market-format root, MSMT17 root or CSV manifest
    kind: str = "auto"
    image_size: list[int] = field(default_factory=lambda: [256, 128])
    workers: int = 2
    flip: bool = True
    pad: int = 10
    random_erasing: float = 0.5
    color_jitter: float = 0.0
    verify_images: bool = False
    # memory: decode the training set once and run the transforms in the training process
    # (reid/data/cache.py; the same batches, to the bit); off: the transforms in loader workers.
    # Not the default: its gain depends on the machine (README, training throughput)
    cache: str = "off"
    cache_gib: float = 2.0  # the most decoded training images may take; beyond it: off


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    last_stride: int = 1
    pooling: str = "avg"
    embedding_dim: int = 0
    bnneck: bool = True
    pretrained: str | None = None  # "imagenet" or a path to a torchvision state dict
    init_from: str | None = (
        None  # a reid checkpoint: start from its backbone + BNNeck (fine-tuning)
    )
    init_head: bool = False  # with init_from: also its learned head weights (same head, classes)


@dataclass
class HeadConfig:
    name: str = "softmax"
    weights: str = "learned"  # learned | centers (IR-Softmax)
    # the head's own options (None: the head's documented default; set only for heads that use them)
    scale: float | None = None  # normface, cosface, arcface, circle
    margin: float | None = None  # cosface, arcface, circle, sphereface (integer m)
    virtual_clamp: float | None = None  # virtual
    beta_fixed: float | None = None  # sphereface: fixed β instead of annealing (IR authors: 10)
    # the IR-Softmax centers' own settings (head.weights=centers) are the ``centers:`` section
    # loss mix: the head's own loss weight, and an auxiliary learned softmax
    # (the authors' code: ir_weight 0.1 with aux_softmax 1.0)
    ir_weight: float = 1.0
    aux_softmax: float = 0.0


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    triplet: float = 1.0  # weight; 0 disables
    triplet_margin: float | None = 0.3  # None: soft margin
    center: float = 0.0  # center-loss weight (BoT: 5e-4)


@dataclass
class SamplerConfig:
    name: str = "pk"  # pk | balanced | power | repeat | random
    batch_size: int = 64
    num_instances: int = 4
    power: float = 0.5
    repeat_threshold: float = 0.01


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    scheduler: str = "multistep"  # multistep | cosine
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 120
    device: str = "auto"
    amp: str = "auto"  # auto | off | fp16 | bf16 (auto: fp16 on CUDA, off on CPU)
    # NHWC convolutions: 1.2-1.4x over fp32 NCHW for MobileNetV2 / ResNet-50 on 2-core CPUs, ~1x for
    # ResNet-18 (README, training throughput). Not the default: it reorders float sums, so a
    # seeded run ends at other numbers (within rounding per step, chaotic over a run); the
    # ResNet-50 configs (configs/market1501) and the study grids set it
    channels_last: bool = False
    # torch.compile (inductor) of the backbone for the training steps; extraction stays eager.
    # The first step compiles (measured on 2 cores: 41 s ResNet-18, 120 s MobileNetV2);
    # numbers change within float reordering
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    max_iters_per_epoch: int = 0  # 0 = the sampler's epoch
    log_every: int = 20  # iterations between progress lines when the log is not a terminal; 0: off
    # intra-op threads of the training process; 0: torch's default (one per core). A run's
    # numbers depend on it (the order of float sums), not on what runs beside it
    threads: int = 0


@dataclass
class EvalConfig:
    every: int = 10  # epochs; 0 = only at the end
    metric: str = "cosine"
    ap: str = "torchreid"
    flip: bool = False
    rerank: bool = False
    batch_size: int = 128


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    tensorboard: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    centers: CenterSettings = field(default_factory=CenterSettings)  # reid/heads/centers.py
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


class ConfigError(ReidError):
    """Bad configuration: unknown key, wrong type or value, unreadable file."""


#: every boolean key, ``section.key``
BOOLEAN_KEYS = frozenset(
    f"{section.name}.{item.name}"
    for section in fields(Config)
    for item in fields(section.default_factory())
    if item.type in ("bool", bool)
)


#: choice fields and their valid values, taken from the registries that use them
CHOICES = {
    "data.kind": ("auto", *LOADERS),
    "data.cache": ("off", "memory"),
    "model.pooling": tuple(POOLINGS),
    "head.name": tuple(HEADS),
    "head.weights": WEIGHT_MODES,
    "centers.update": tuple(CENTER_UPDATES),
    "centers.init": CENTER_INITS,
    "sampler.name": (*SAMPLERS, "random"),
    "optim.name": tuple(OPTIMIZERS),
    "optim.scheduler": SCHEDULERS,
    "train.amp": AMP_MODES,
    "eval.metric": METRICS,
    "eval.ap": AP_MODES,
}


#: what a string field holds after YAML read one of its boolean words, and the choice it was
YAML_BOOLEAN_WORDS = {"False": "off", "True": "on"}


#: the range of every numeric key: (low, high, low_open, high_open); None means unbounded.
#: ``tests/test_config.py`` fails for a numeric key that is missing here and tries the values
#: just outside each range.
BIG = 1e6
RANGES = {
    "data.workers": (0, 64, False, False),
    "data.pad": (0, 256, False, False),
    "data.random_erasing": (0, 1, False, False),  # a probability
    "data.color_jitter": (0, 1, False, False),
    "data.cache_gib": (0, 4096, True, False),
    "model.last_stride": (1, 2, False, False),
    "model.embedding_dim": (0, 65536, False, False),  # 0: the backbone's own width
    "head.scale": (0, 1000, True, False),
    "head.margin": (0, 10, False, False),
    "head.virtual_clamp": (0, BIG, False, False),
    "head.beta_fixed": (0, BIG, False, False),
    "centers.momentum": (0, 1, False, True),
    "centers.lr": (0, 10, False, False),
    "centers.lam": (0, BIG, False, False),
    "centers.pull": (0, BIG, False, False),
    "centers.refresh": (0, 100000, False, False),
    "head.ir_weight": (0, BIG, False, False),
    "head.aux_softmax": (0, BIG, False, False),
    "loss.label_smoothing": (0, 1, False, True),
    "loss.triplet": (0, BIG, False, False),
    "loss.triplet_margin": (0, 100, False, False),
    "loss.center": (0, BIG, False, False),
    "sampler.batch_size": (1, 65536, False, False),
    "sampler.num_instances": (1, 1024, False, False),
    "sampler.power": (0, 10, False, False),
    "sampler.repeat_threshold": (0, 1, False, False),
    "optim.lr": (0, 10, True, False),
    "optim.weight_decay": (0, 1, False, False),
    "optim.momentum": (0, 1, False, True),
    "optim.gamma": (0, 1, True, False),
    "optim.warmup_epochs": (0, 100000, False, False),
    "optim.warmup_factor": (0, 1, True, False),
    "optim.grad_clip": (0, BIG, False, False),
    "train.epochs": (1, 100000, False, False),
    "train.seed": (0, 2**32 - 1, False, False),
    "train.max_iters_per_epoch": (0, 10**7, False, False),
    "train.log_every": (0, 10**7, False, False),
    "train.threads": (0, 4096, False, False),
    "eval.every": (0, 100000, False, False),
    "eval.batch_size": (1, 65536, False, False),
}
#: list-valued keys: the range of each item
ITEM_RANGES = {
    "data.image_size": (16, 2048, False, False),
    "optim.milestones": (1, 100000, False, False),
}


def describe_range(low, high, low_open, high_open) -> str:
    return f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def in_range(value, low, high, low_open, high_open) -> bool:
    return (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high
    )


def _get(config: DictConfig, key: str):
    section, name = key.split(".")
    return config[section][name]


def validate(config: DictConfig, source: str = "config") -> None:
    """Reject values the code cannot use, naming the key: unknown choices and backbones, a head
    option the chosen head does not use, numbers outside their range, a device this machine
    does not have."""

    def bad(key: str, why: str):
        raise ConfigError(f"{source}: {key}={_get(config, key)!r}: {why}")

    for key, valid in CHOICES.items():
        value = _get(config, key)
        word = YAML_BOOLEAN_WORDS.get(str(value))
        if value not in valid and word is not None and word in valid:
            # YAML 1.1 reads off/on/no/yes as booleans, which a string field stores as
            # "False"/"True": the user wrote the choice, give it back
            section, name = key.split(".")
            config[section][name] = word
            continue
        if value not in valid:
            bad(key, f"unknown value; valid: {', '.join(valid)}")
    backbone = config.model.backbone
    if backbone not in TORCHVISION and not (
        backbone.startswith("torchreid:") and len(backbone) > len("torchreid:")
    ):
        bad(
            "model.backbone",
            f"unknown backbone; valid: {', '.join(TORCHVISION)}, or torchreid:NAME",
        )
    used = HEADS[config.head.name].OPTIONS
    for option in ALL_HEAD_OPTIONS:
        if config.head[option] is not None and option not in used:
            bad(
                f"head.{option}",
                f"not an option of head {config.head.name!r} "
                f"(its options: {', '.join(used) or 'none'})",
            )
    for key, bounds in RANGES.items():
        value = _get(config, key)
        if value is not None and not in_range(value, *bounds):
            bad(key, describe_range(*bounds))
    for key, bounds in ITEM_RANGES.items():
        values = list(_get(config, key))
        if any(not in_range(v, *bounds) for v in values):
            raise ConfigError(f"{source}: {key}={values}: every item {describe_range(*bounds)}")
    if len(config.data.image_size) != 2:
        raise ConfigError(
            f"{source}: data.image_size={list(config.data.image_size)}: must be [H, W]"
        )
    if config.model.init_head and not config.model.init_from:
        bad("model.init_head", "needs model.init_from (the checkpoint to take the head from)")
    if backbone.startswith("torchreid:"):
        try:
            require("torchreid", f"model.backbone={backbone}")
        except ReidError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if config.output.tensorboard:
        try:
            require("tensorboard", "output.tensorboard=true")
        except ReidError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if config.train.device != "auto":
        try:
            check_device(config.train.device, "train.device")
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _valid_keys(key: str) -> str:
    schema = OmegaConf.structured(Config)
    section = key.split(".")[0]
    if section in schema and "." in key:
        return f"valid keys of {section!r}: {', '.join(schema[section].keys())}"
    return f"valid sections: {', '.join(schema.keys())}"


#: keys that moved, old → new: configs, overrides and checkpoints that use the old name still load
MOVED = {
    "head.center_update": "centers.update",
    "head.center_momentum": "centers.momentum",
    "head.center_lr": "centers.lr",
    "head.center_lambda": "centers.lam",
    "head.center_pull": "centers.pull",
    "head.center_init": "centers.init",
    "head.center_refresh": "centers.refresh",
}


def _moved(other):
    """``other`` with every key of ``MOVED`` under its new name (the new name wins if both)."""
    data = OmegaConf.to_container(other) if isinstance(other, DictConfig) else other
    if not isinstance(data, dict):
        return other
    for old, new in MOVED.items():
        (os_, ok), (ns, nk) = old.split("."), new.split(".")
        section = data.get(os_)
        if isinstance(section, dict) and ok in section:
            value = section.pop(ok)
            data.setdefault(ns, {})
            if isinstance(data[ns], dict):
                data[ns].setdefault(nk, value)
    return data


def _check_booleans(data, source: str) -> None:
    """A boolean key takes true or false (or 1 / 0): OmegaConf reads any other number as true
    (``data.flip=2`` would be on), which hides a typo or a value meant for another key."""
    for section, items in data.items() if isinstance(data, dict) else ():
        for key, value in items.items() if isinstance(items, dict) else ():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and value not in (0, 1) and f"{section}.{key}" in BOOLEAN_KEYS:
                raise ConfigError(
                    f"{source}: {section}.{key}: {value!r} is not a boolean; use true or false"
                )


def _merge(base: DictConfig, other, source: str) -> DictConfig:
    other = _moved(other)
    _check_booleans(other, source)
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = exc.full_key or str(exc)
        raise ConfigError(f"{source}: unknown key {key!r}; {_valid_keys(key)}") from None
    except ValidationError as exc:
        reason = str(exc.msg).strip().splitlines()[0] if str(exc.msg).strip() else "invalid value"
        raise ConfigError(f"{source}: {exc.full_key}: {reason}") from None


#: the configs that ship inside the package (the demo's, the study's base, the Market recipes):
#: ``--config synthetic/demo.yaml`` and ``_base_: market1501/bot_r50.yaml`` find them by name
PACKAGED = Path(__file__).parent / "configs"


def config_path(path: str | Path, beside: Path | None = None) -> Path:
    """``path`` as given (or relative to ``beside``, the file that names it as its base); else
    the packaged config of that name (``configs/`` in front is allowed: a checkout's path)."""
    path = Path(path)
    given = path if beside is None or path.is_absolute() else beside / path
    if given.is_file() or path.is_absolute():
        return given
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    packaged = PACKAGED.joinpath(*parts) if parts else PACKAGED
    return packaged if packaged.is_file() else given


def _read_yaml(path: Path) -> list:
    if not path.is_file():
        raise ConfigError(
            f"{path}: config file not found (packaged configs: "
            f"{', '.join(sorted(str(p.relative_to(PACKAGED)) for p in PACKAGED.rglob('*.yaml')))})"
        )
    try:
        data = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, …)")
    layers = []
    if "_base_" in data:
        layers += _read_yaml(config_path(str(data.pop("_base_")), path.parent).resolve())
    return layers + [(data, str(path))]


def _check_interpolations(config: DictConfig, source: str) -> None:
    """Every ``${...}`` resolves now, not at first use deep in a run: one line naming the key."""
    try:
        OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = (str(getattr(exc, "msg", exc)).strip().splitlines() or ["cannot resolve"])[0]
        raise ConfigError(f"{source}: {key}: cannot resolve its interpolation ({reason})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    config = OmegaConf.structured(Config)
    if path is not None:
        for layer, source in _read_yaml(config_path(path)):
            config = _merge(config, layer, source)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        config = _merge(config, OmegaConf.from_dotlist([item]), f"override {item!r}")
    _check_interpolations(config, str(path) if path is not None else "config")
    validate(config, str(path) if path is not None else "config")
    OmegaConf.set_readonly(config, True)
    return config


def config_from_dict(data: dict, source: str = "checkpoint") -> DictConfig:
    """Re-validate a stored (resolved) configuration against the schema."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: not a mapping of sections (data:, model:, …)")
    config = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    _check_interpolations(config, source)
    validate(config, source)
    OmegaConf.set_readonly(config, True)
    return config


def config_yaml(config: DictConfig) -> str:
    """The resolved configuration as YAML (saved next to every run)."""
    return OmegaConf.to_yaml(config)


def to_dict(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)
