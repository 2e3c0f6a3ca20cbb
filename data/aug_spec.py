"""The ``--aug_list`` grammar (the public release's), parsed without TensorFlow.

A spec is a comma-separated list of *views*; each view is a chain of ops joined
by ``+`` and is drawn independently of the other views:

* ``A,B``: two views, one from chain A and one from chain B.
* An entry that starts with ``+`` is appended to the first entry:
  ``A,+rotate90`` = the views ``A`` and ``A+rotate90`` (two independent draws
  of A, the second one then rotated). A lone ``+`` repeats the first entry, so
  ``A,+`` is two independent views of A (the release's contrastive scripts).
* ``x`` means "resize only": it drops the ops before it in its chain (for our
  fixed-size images resizing is the identity).

Tokens (F a number; a bare token takes the release's default):

=================  ============================================================
``cnr[F]``         random square crop, side in [F*H, H] (default F=0.5),
                   resized back to H (``crop_and_resize[F]`` is the same op)
``crop[N]``        random N x N crop without padding, resized back to H
                   (default N = 0.875*H)
``shift``          reflect-pad by 0.125*H on every side, random H x H crop
                   (a random translation)
``resize``         resize to the input size (identity here)
``hflip``/``vflip`` random flip with probability 0.5
``rotate90``,      fixed counter-clockwise rotation by 90/180/270 degrees
``rotate180``,
``rotate270``
``rotrand``        random rotation by a multiple of 90 degrees (ours)
``jitter[_bF_cF_sF_hF]`` colour jitter; parts not given take the defaults
                   b0.125 c0.4 s0.4 h0
``gray[F]``        grayscale with probability F (default 0.2)
``blur[F]``        Gaussian blur with probability F (default 0.5)
=================  ============================================================

Parsing happens when flags are resolved, so a bad spec is a ``ConfigError``
before anything runs. data/augment.py implements the ops.
"""

import re

from util.errors import ConfigError

DEFAULT_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"

#: The rotation views that turn a single-chain spec into the rotation task.
ROTATION_SUFFIX = ",+rotate90,+rotate180,+rotate270"

JITTER_DEFAULTS = {"brightness": 0.125, "contrast": 0.4, "saturation": 0.4, "hue": 0.0}
_JITTER_KEYS = {"b": "brightness", "c": "contrast", "s": "saturation", "h": "hue"}
_JITTER_MAX = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5}
_SIMPLE = ("hflip", "vflip", "rotate90", "rotate180", "rotate270", "rotrand", "shift",
           "resize")
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"

_VALID_FORMS = (
    "valid tokens: cnr[F], crop_and_resize[F], crop[N], shift, resize, hflip, vflip, "
    "rotate90, rotate180, rotate270, rotrand, jitter[_bF_cF_sF_hF], gray[F], blur[F], x; "
    "join ops with '+', separate views with ',' (an entry starting with '+' extends the "
    "first entry); e.g. '%s' or '%s'" % (DEFAULT_AUG, "cnr+hflip" + ROTATION_SUFFIX))


def _bad(token, why):
    return ConfigError("bad augmentation token %r in --aug_list: %s; %s" % (
        token, why, _VALID_FORMS))


def _number(token, prefix):
    """The number after prefix (None if there is none); raises on junk."""
    rest = token[len(prefix):]
    if not rest:
        return None
    if not re.fullmatch(_NUM, rest):
        raise _bad(token, "%r is not a number" % rest)
    return float(rest)


def _parse_token(token):
    """One token -> (op name, kwargs); None for 'x' (which resets the chain)."""
    if token == "x":
        return None
    if token in _SIMPLE:
        return (token, {})
    if token.startswith("jitter"):
        rest = token[len("jitter"):]
        values = dict(JITTER_DEFAULTS)
        seen = set()
        for part in filter(None, rest.split("_")):
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
            values[name] = value
        if rest and not rest.startswith("_"):
            raise _bad(token, "write jitter parts as jitter_bF_cF_sF_hF")
        return ("jitter", values)
    for prefix in ("crop_and_resize", "cnr"):
        if token.startswith(prefix):
            scale = _number(token, prefix)
            scale = 0.5 if scale is None else scale
            if not 0.0 < scale <= 1.0:
                raise _bad(token, "the crop min scale must be in (0,1]")
            return ("cnr", {"min_scale": scale})
    if token.startswith("crop"):
        size = _number(token, "crop")
        if size is not None and (size != int(size) or size < 1):
            raise _bad(token, "the crop size must be a positive integer (pixels)")
        return ("crop", {"size": None if size is None else int(size)})
    for prefix, default in (("gray", 0.2), ("blur", 0.5)):
        if token.startswith(prefix):
            p = _number(token, prefix)
            p = default if p is None else p
            if not 0.0 <= p <= 1.0:
                raise _bad(token, "the probability must be in [0,1]")
            return (prefix, {"p": p})
    raise _bad(token, "unknown op")


def parse_chain(entry):
    """One view's chain 'cnr0.5+hflip' -> [(op, kwargs), ...]; 'x' drops what precedes it."""
    ops = []
    for token in entry.split("+"):
        token = token.strip()
        if not token:
            continue
        op = _parse_token(token)
        if op is None:
            ops = []
        else:
            ops.append(op)
    return ops


def split_views(spec):
    """The spec's view entries as strings, with '+'-entries expanded onto the first."""
    if not isinstance(spec, str):
        raise ConfigError("--aug_list must be a string, got %r; %s" % (spec, _VALID_FORMS))
    entries = [e.strip() for e in spec.split(",")]
    if entries[0].startswith("+"):
        raise ConfigError("--aug_list=%r: the first entry cannot start with '+' (a '+' entry "
                          "extends the first one); %s" % (spec, _VALID_FORMS))
    return [entries[0] + e if e.startswith("+") else e for e in entries]


def parse_aug_list(spec, size=None):
    """'A,+rotate90' -> one op chain per view: [[(op, kwargs), ...], ...].

    An empty chain means no augmentation (resize only). The kwargs are the
    keyword arguments of the ops in data/augment.py. With the image ``size``,
    also checks that crop windows fit in the image.
    """
    chains = [parse_chain(entry) for entry in split_views(spec)]
    for chain in chains if size else ():
        for name, kwargs in chain:
            if name == "crop" and kwargs["size"] is not None and kwargs["size"] > size:
                raise ConfigError("--aug_list=%r: crop%d needs a window of at most the image "
                                  "size %d" % (spec, kwargs["size"], size))
    return chains


def num_views(spec):
    return len(split_views(spec))


def has_hflip(spec):
    """True when some view of the spec has a random horizontal flip."""
    return any(name == "hflip" for chain in parse_aug_list(spec) for name, _ in chain)


def drop_hflip(spec):
    """The spec without its 'hflip' tokens (other tokens and views unchanged)."""
    views = []
    for entry in spec.split(","):
        tokens = [t for t in entry.split("+") if t.strip() != "hflip"]
        joined = "+".join(tokens)
        views.append(joined or ("+" if entry.startswith("+") else "x"))
    return ",".join(views)
