"""The ``--aug_list`` spec: its default and its parser (no TensorFlow, so flag
validation stays fast). The ops themselves live in data/augment.py.
"""

import re

from util.errors import ConfigError

DEFAULT_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"

_VALID_FORMS = (
    "valid forms: 'cnrF' (random resized crop, min scale F in (0,1]), 'hflip', "
    "'vflip', 'jitter_bF_cF_sF_hF' (any subset of the b/c/s/h parts; b, c, s in "
    "[0,1], h in [0,0.5]), 'grayF' and 'blurF' (probability F in [0,1]), "
    "'rotate90'; join ops with '+'; 'x' or '' means no augmentation; "
    "e.g. '%s'" % DEFAULT_AUG)


# ----------------------------------------------------------------------------
# Spec parsing

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_SIMPLE = {"hflip": "hflip", "vflip": "vflip", "rotate90": "rotate90"}
_PROB_OPS = {"gray": "gray", "blur": "blur"}
_JITTER_KEYS = {"b": "brightness", "c": "contrast", "s": "saturation", "h": "hue"}
_JITTER_MAX = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5}


def _bad(token, why):
    return ConfigError("bad augmentation token %r in the aug spec: %s; %s" % (
        token, why, _VALID_FORMS))


def _parse_token(token):
    if token in _SIMPLE:
        return (_SIMPLE[token], {})
    m = re.fullmatch(r"cnr" + _NUM, token)
    if m:
        scale = float(m.group(1))
        if not 0.0 < scale <= 1.0:
            raise _bad(token, "the crop min scale must be in (0,1]")
        return ("cnr", {"min_scale": scale})
    m = re.fullmatch(r"(gray|blur)" + _NUM, token)
    if m:
        p = float(m.group(2))
        if not 0.0 <= p <= 1.0:
            raise _bad(token, "the probability must be in [0,1]")
        return (_PROB_OPS[m.group(1)], {"p": p})
    if token == "jitter" or token.startswith("jitter_"):
        kwargs = {name: 0.0 for name in _JITTER_KEYS.values()}
        seen = set()
        for part in token.split("_")[1:]:
            m = re.fullmatch(r"([bcsh])" + _NUM, part)
            if not m:
                raise _bad(token, "jitter part %r is not one of bF, cF, sF, hF" % part)
            if m.group(1) in seen:
                raise _bad(token, "jitter part %r is given twice" % m.group(1))
            seen.add(m.group(1))
            name = _JITTER_KEYS[m.group(1)]
            value = float(m.group(2))
            if value > _JITTER_MAX[name]:
                raise _bad(token, "jitter %s must be in [0,%g]" % (name, _JITTER_MAX[name]))
            kwargs[name] = value
        return ("jitter", kwargs)
    raise _bad(token, "unknown op or malformed number")


def parse_aug_list(spec):
    """Parses an aug spec like 'cnr0.5+hflip+gray0.2' into [(op, kwargs), ...].

    'x' or '' gives []. The kwargs are the keyword arguments of the op's function,
    so errors surface when flags are parsed, not inside a tf.data pipeline.
    """
    if not isinstance(spec, str):
        raise ConfigError("the aug spec must be a string, got %r; %s" % (spec, _VALID_FORMS))
    spec = spec.strip()
    if spec in ("", "x"):
        return []
    return [_parse_token(token.strip()) for token in spec.split("+")]
