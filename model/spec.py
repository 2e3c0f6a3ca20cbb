"""Architecture tables and flag parsers of the models, without TensorFlow.

Flag validation (engine/validate.py) uses them before Keras is imported;
model/resnet.py and model/heads.py build the networks from the same tables.
"""

from util.errors import ConfigError

# name -> (block type, blocks per stage)
RESNET_SPECS = {
    "ResNet10": ("basic", (1, 1, 1, 1)),
    "ResNet18": ("basic", (2, 2, 2, 2)),
    "ResNet34": ("basic", (3, 4, 6, 3)),
    "ResNet50": ("bottleneck", (3, 4, 6, 3)),
    "ResNet101": ("bottleneck", (3, 4, 23, 3)),
    "ResNet152": ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
SMALL_STEM_MAX_SIZE = 64


def check_input_shape(input_shape):
    """Raise ConfigError unless the backbone can take ``input_shape`` (H, W, 3)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"--input_shape={','.join(map(str, shape))} must be H,W,3 "
                          "(RGB); e.g. --input_shape=32,32,3")
    h, w, _ = shape
    if h != w:
        raise ConfigError(f"--input_shape={h},{w},3 must be square (rotations need H == W); "
                          "e.g. --input_shape=32,32,3")
    multiple = 8 if h <= SMALL_STEM_MAX_SIZE else 32
    if h < 16 or h % multiple:
        raise ConfigError(f"--input_shape={h},{w},3 is not supported: the side must be >= 16 and a "
                          f"multiple of {multiple} (e.g. 32, 64, 128, 256)")
    return shape


def parse_head_dims(spec):
    """'512x8,128' -> [512]*8 + [128]; '' -> [] (no head). Raises ConfigError."""
    spec = (spec or "").strip()
    if not spec:
        return []
    dims = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "x" in part:
                size, times = part.split("x")
                dims.extend([int(size)] * int(times))
            else:
                dims.append(int(part))
        except ValueError:
            raise ConfigError(f"--head_dims={spec!r} does not parse at {part!r}: use "
                              "comma-separated sizes with optional repeats, e.g. 512x8,128") from None
    if any(d <= 0 for d in dims):
        raise ConfigError(f"--head_dims={spec!r}: every size must be a positive integer")
    return dims


# --- local feature maps (model/feature_maps.py) ---------------------------------------
#: the ResNet stages of a feature map and the local window, unless a run says otherwise
DEFAULT_STAGES = (2, 3)
DEFAULT_NEIGHBOURHOOD = 3


def parse_stages(spec):
    """'2,3' -> (2, 3): sorted, distinct ResNet stages 1..4 (ConfigError otherwise)."""
    try:
        stages = tuple(int(s) for s in str(spec).split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--map_stages={spec} must be a comma list of ResNet stages 1..4, "
                          "e.g. 2,3") from None
    if not stages or any(s not in (1, 2, 3, 4) for s in stages) or len(set(stages)) != len(stages):
        raise ConfigError(f"--map_stages={spec} must be a comma list of distinct ResNet stages "
                          "1..4, e.g. 2,3")
    return tuple(sorted(stages))


def stage_stride(stage):
    """Total stride of ResNet stage ``stage`` behind a 7x7 stride-2 stem and max-pool."""
    return 2 ** (int(stage) + 1)
