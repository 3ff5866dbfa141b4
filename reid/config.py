"""One typed configuration (OmegaConf structured config), at most two levels deep.

YAML files hold only what differs from these defaults; a file may name a parent with
``_base_: relative/path.yaml``. Command-line overrides are ``section.key=value``. Unknown
sections or keys are errors naming the key and the valid ones. ``config_yaml`` is the
resolved configuration saved next to every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from .arguments import BATCH, SEED, WORKERS, Float, Int, check_device
from .data import LOADERS
from .data.samplers import SAMPLERS
from .errors import ReidError
from .evaluation.rank import AP_MODES, METRICS
from .heads import ALL_HEAD_OPTIONS, HEADS, WEIGHT_MODES
from .heads.centers import CenterSettings
from .models.backbone import TORCHVISION
from .models.pooling import POOLINGS
from .optim import AMP_MODES, OPTIMIZERS, SCHEDULERS
from .optional import require
from .settings import setting, settings_of

BIG = 1e6  # "no practical upper bound" for weights and factors


@dataclass
class DataConfig:
    root: str = setting("datasets/synthetic", "Market-format root, MSMT17 root or CSV manifest")
    kind: str = setting(
        "auto",
        "the dataset's layout (auto: recognised from the folder)",
        choices=("auto", *LOADERS),
    )
    image_size: list[int] = setting(
        [256, 128], "input size [height, width] in pixels", items=Int(16, 2048)
    )
    workers: int = setting(2, "data loader worker processes", WORKERS)
    flip: bool = setting(True, "random horizontal flips in training")
    pad: int = setting(10, "pixels padded before the random crop (0: no crop)", Int(0, 256))
    random_erasing: float = setting(0.5, "probability of random erasing per image", Float(0, 1))
    color_jitter: float = setting(
        0.0, "colour jitter strength (brightness, contrast, saturation; 0: off)", Float(0, 1)
    )
    verify_images: bool = setting(
        False,
        "decode every image once before training (a corrupt "
        "file fails in seconds, not in epoch 37)",
    )
    cache: str = setting(
        "off",
        "memory: decode the training set once and run the transforms "
        "in the training process (the same batches, to the bit); off: the "
        "transforms in loader workers. Not the default: its gain depends on "
        "the machine (docs/benchmarks.md)",
        choices=("off", "memory"),
    )
    cache_gib: float = setting(
        2.0,
        "the most decoded training images may take; beyond it the cache is off",
        Float(0, 4096, low_open=True),
    )


@dataclass
class ModelConfig:
    backbone: str = setting(
        "resnet50", "a torchvision backbone (resnet18/34/50/101, mobilenet_v2, …) or torchreid:NAME"
    )
    last_stride: int = setting(
        1,
        "stride of the backbone's last stage (1: the re-ID habit, twice the feature map)",
        Int(1, 2),
    )
    pooling: str = setting("avg", "global pooling of the feature map", choices=tuple(POOLINGS))
    embedding_dim: int = setting(
        0,
        "a linear embedding of this width before the BNNeck (0: the backbone's own width)",
        Int(0, 65536),
    )
    bnneck: bool = setting(
        True, "BNNeck: a batch norm between the triplet-loss feature and the classifier"
    )
    pretrained: str | None = setting(
        None, '"imagenet" (offline weights) or a path to a torchvision state dict'
    )
    init_from: str | None = setting(
        None, "a reid checkpoint: start from its backbone + BNNeck (fine-tuning)"
    )
    init_head: bool = setting(
        False, "with init_from: also its learned head weights (same head, same classes)"
    )


def _head_config():
    """The ``head:`` section: the head choice and loss mix, declared here, and every head's own
    options, declared in the head's file (``OPTIONS``): a new head option is one line there."""
    own = [
        ("name", str, setting("softmax", "the classifier head", choices=tuple(HEADS))),
        ("weights", str, setting("learned", "learned class weights, or centers (IR-Softmax: "
                                 "class centers of the features)", choices=WEIGHT_MODES)),
    ]  # fmt: skip
    options = []
    declared = dict.fromkeys(key for cls in HEADS.values() for key in cls.OPTIONS)
    for key in declared:  # in the order the heads declare them
        heads = {name: cls.OPTIONS[key] for name, cls in HEADS.items() if key in cls.OPTIONS}
        first = next(iter(heads.values()))
        if len({o.help for o in heads.values()}) == 1:
            defaults = ", ".join(f"{n} {o.default}" for n, o in heads.items())
            text = f"{first.help}; unset: the head's default ({defaults})"
        else:
            text = "; ".join(f"{n}: {o.help} (default {o.default})" for n, o in heads.items())
        spec = setting(None, text, first.bounds)
        options.append((key, float | None, spec))
    mix = [
        ("ir_weight", float, setting(1.0, "the head's own loss weight (the authors' code: 0.1 "
                                     "with aux_softmax 1.0)", Float(0, BIG))),
        ("aux_softmax", float, setting(0.0, "weight of an auxiliary learned softmax head's loss "
                                       "(0: none)", Float(0, BIG))),
    ]  # fmt: skip
    return make_dataclass("HeadConfig", own + options + mix)


HeadConfig = _head_config()


@dataclass
class LossConfig:
    label_smoothing: float = setting(
        0.1, "label smoothing ε of the cross-entropy", Float(0, 1, high_open=True)
    )
    triplet: float = setting(1.0, "batch-hard triplet loss weight (0: off)", Float(0, BIG))
    triplet_margin: float | None = setting(0.3, "triplet margin (null: soft margin)", Float(0, 100))
    center: float = setting(0.0, "center-loss weight (BoT: 5e-4; 0: off)", Float(0, BIG))


def _sampler_config():
    """The ``sampler:`` section: the choice and the batch shape, declared here, and each
    sampler's own settings, declared in its class (``OPTIONS``) in ``data/samplers.py``."""
    own = [
        ("name", str, setting("pk", "how identities are drawn (pk: P×K batches; balanced, power, "
                              "repeat: imbalance samplers; random)", choices=(*SAMPLERS, "random"))),
        ("batch_size", int, setting(64, "images per batch", BATCH)),
        ("num_instances", int, setting(4, "K: images per identity in a batch", Int(1, 1024))),
    ]  # fmt: skip
    declared = {}
    for cls in SAMPLERS.values():
        for key, spec in cls.OPTIONS.items():
            declared.setdefault(key, spec)
    options = [(key, type(spec.default), setting(spec.default, spec.help, spec.bounds))
               for key, spec in declared.items()]  # fmt: skip
    return make_dataclass("SamplerConfig", own + options)


SamplerConfig = _sampler_config()


@dataclass
class OptimConfig:
    name: str = setting("adam", "the optimizer", choices=tuple(OPTIMIZERS))
    lr: float = setting(3.5e-4, "base learning rate", Float(0, 10, low_open=True))
    weight_decay: float = setting(
        5e-4, "weight decay (weights only: no decay on BN, biases, GeM's p)", Float(0, 1)
    )
    momentum: float = setting(0.9, "sgd: momentum (Nesterov)", Float(0, 1, high_open=True))
    scheduler: str = setting(
        "multistep", "learning-rate schedule after the warm-up", choices=SCHEDULERS
    )
    milestones: list[int] = setting(
        [40, 70], "multistep: epochs at which the rate is multiplied by gamma", items=Int(1, 100000)
    )
    gamma: float = setting(
        0.1, "multistep: the factor at each milestone", Float(0, 1, low_open=True)
    )
    warmup_epochs: int = setting(10, "epochs of linear warm-up", Int(0, 100000))
    warmup_factor: float = setting(
        0.01, "the rate's factor at the warm-up's start", Float(0, 1, low_open=True)
    )
    grad_clip: float = setting(0.0, "clip the gradient norm at this value (0: off)", Float(0, BIG))


@dataclass
class TrainConfig:
    epochs: int = setting(120, "training epochs", Int(1, 100000))
    device: str = setting("auto", "auto (CUDA if available), cpu, cuda or cuda:N")
    amp: str = setting(
        "auto", "mixed precision (auto: fp16 on CUDA, off on CPU)", choices=AMP_MODES
    )
    channels_last: bool = setting(
        False,
        "NHWC convolutions: 1.2-1.4x over NCHW for MobileNetV2 "
        "/ ResNet-50 on 2-core CPUs, ~1x for ResNet-18. Not the "
        "default: it reorders float sums, so a seeded run ends at "
        "other numbers",
    )
    compile: bool = setting(
        False,
        "torch.compile (inductor) of the backbone for the training "
        "steps (the first step compiles: 41 s ResNet-18, 120 s MobileNetV2 "
        "on 2 cores); numbers change within float reordering",
    )
    seed: int = setting(0, "the run's seed (weights, sampling, augmentation)", SEED)
    deterministic: bool = setting(False, "deterministic kernels (slower; CUDA)")
    max_iters_per_epoch: int = setting(
        0, "cap on steps per epoch (0: the sampler's epoch)", Int(0, 10**7)
    )
    log_every: int = setting(
        20, "steps between progress lines when the log is not a terminal (0: off)", Int(0, 10**7)
    )
    threads: int = setting(
        0,
        "intra-op threads of the training process (0: torch's default, "
        "one per core); a run's numbers depend on it",
        Int(0, 4096),
    )


@dataclass
class EvalConfig:
    every: int = setting(10, "evaluate every N epochs (0: only at the end)", Int(0, 100000))
    metric: str = setting("cosine", "distance of the evaluation", choices=METRICS)
    ap: str = setting("torchreid", "the AP protocol", choices=AP_MODES)
    flip: bool = setting(False, "average each image's features with its mirror's")
    rerank: bool = setting(False, "k-reciprocal re-ranking")
    batch_size: int = setting(128, "images per extraction batch", BATCH)


@dataclass
class OutputConfig:
    dir: str = setting("runs/default", "the run folder (checkpoints, metrics, config, plots)")
    tensorboard: bool = setting(False, "also log to TensorBoard (the tensorboard extra)")


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


#: every setting of the schema, ``section.key`` → its ``Setting`` (type, default, help, range)
SETTINGS = {
    f"{section.name}.{key}": spec
    for section in fields(Config)
    for key, spec in settings_of(section.default_factory).items()
}


class ConfigError(ReidError):
    """Bad configuration: unknown key, wrong type or value, unreadable file."""


#: every boolean key, ``section.key``
BOOLEAN_KEYS = frozenset(
    f"{section.name}.{item.name}"
    for section in fields(Config)
    for item in fields(section.default_factory())
    if item.type in ("bool", bool)
)


#: choice fields and their valid values (from the settings)
CHOICES = {key: spec.choices for key, spec in SETTINGS.items() if spec.choices is not None}


#: what a string field holds after YAML read one of its boolean words, and the choice it was
YAML_BOOLEAN_WORDS = {"False": "off", "True": "on"}


#: the range of every numeric key, and of every list's items (from the settings; a head
#: option's is the first declaring head's, each head checks its own in ``validate``)
RANGES = {key: spec.bounds for key, spec in SETTINGS.items() if spec.bounds is not None}
ITEM_RANGES = {key: spec.items for key, spec in SETTINGS.items() if spec.items is not None}


def add_setting_flag(parser, flag: str, key: str, **kwargs) -> None:
    """A command-line flag that mirrors the config key ``key``: its type and range, default,
    choices and help come from the key's one declaration."""
    spec = SETTINGS[key]
    if spec.choices is not None:
        kwargs.setdefault("choices", list(spec.choices))
    elif spec.bounds is not None:
        kwargs.setdefault("type", spec.bounds)
    parser.add_argument(flag, default=spec.default, help=f"{spec.help} (config: {key})", **kwargs)


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
        why = SETTINGS[key].check(value)
        if why is not None:
            bad(key, why)
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
    for key, spec in SETTINGS.items():
        if key.startswith("head.") and key.split(".")[1] in used:
            spec = used[key.split(".")[1]]  # the chosen head's own range
        why = spec.check(_get(config, key)) if spec.choices is None else None  # choices: above
        if why is not None:
            value = _get(config, key)
            shown = list(value) if spec.items is not None else value
            raise ConfigError(f"{source}: {key}={shown!r}: {why}")
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
