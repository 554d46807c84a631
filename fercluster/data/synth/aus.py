"""Action-unit catalogue and EMFACS emotion prototypes of the synthetic FACS faces.

Each AU is a deformation of its own facial region: a displacement of some of the 68 iBUG
landmarks (in canonical face units: the face is about 2 units wide, x to the subject's left in
the image, y down; ``dx`` is *away from the midline*) plus, for some AUs, wrinkles or bulges that
the renderer draws (faces.py). Intensities are in [0, 1]; 0 is neutral.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str  # FACS name
    region: str  # the facial region it deforms
    moves: tuple[tuple[tuple[int, ...], float, float], ...]  # (landmarks, dx outward, dy) at intensity 1


def _au(number: int, name: str, region: str, *moves: tuple[tuple[int, ...], float, float]) -> ActionUnit:
    return ActionUnit(number, name, region, tuple(moves))


_JAW_26 = (((8,), 0, 0.13), ((7, 9), 0, 0.12), ((6, 10), 0, 0.095), ((5, 11), 0, 0.06), ((4, 12), 0, 0.03))
_JAW_27 = (((8,), 0, 0.24), ((7, 9), 0, 0.22), ((6, 10), 0, 0.17), ((5, 11), 0, 0.11), ((4, 12), 0, 0.06))

ACTION_UNITS: dict[int, ActionUnit] = {
    a.number: a
    for a in (
        _au(
            1,
            "Inner Brow Raiser",
            "inner brows, central forehead",
            ((21, 22), 0, -0.11),
            ((20, 23), 0, -0.08),
            ((19, 24), 0, -0.045),
            ((18, 25), 0, -0.015),
        ),
        _au(
            2,
            "Outer Brow Raiser",
            "outer brows, lateral forehead",
            ((17, 26), 0, -0.11),
            ((18, 25), 0, -0.09),
            ((19, 24), 0, -0.05),
            ((20, 23), 0, -0.02),
        ),
        _au(
            4,
            "Brow Lowerer",
            "brows and glabella",
            ((21, 22), -0.05, 0.075),
            ((20, 23), -0.03, 0.065),
            ((19, 24), -0.015, 0.06),
            ((17, 18, 25, 26), 0, 0.05),
        ),
        _au(5, "Upper Lid Raiser", "upper eyelids", ((37, 38, 43, 44), 0, -0.055), ((36, 39, 42, 45), 0, -0.005)),
        _au(
            6,
            "Cheek Raiser",
            "cheeks, lower eyelids, outer eye corners",
            ((40, 41, 46, 47), 0, -0.03),
            ((36, 45), 0.005, -0.012),
        ),
        _au(7, "Lid Tightener", "eyelids", ((40, 41, 46, 47), 0, -0.05), ((37, 38, 43, 44), 0, 0.018)),
        _au(
            9,
            "Nose Wrinkler",
            "nose and upper lip",
            ((31, 35), 0.015, -0.05),
            ((32, 33, 34), 0, -0.045),
            ((30,), 0, -0.035),
            ((29,), 0, -0.02),
            ((50, 51, 52), 0, -0.035),
            ((49, 53), 0, -0.025),
            ((61, 62, 63), 0, -0.02),
        ),
        _au(
            12,
            "Lip Corner Puller",
            "lip corners, nasolabial folds, cheeks",
            ((48, 54), 0.07, -0.075),
            ((60, 64), 0.06, -0.065),
            ((49, 53), 0.03, -0.035),
            ((55, 59), 0.03, -0.03),
            ((61, 63, 65, 67), 0, -0.015),
            ((50, 52), 0, -0.01),
        ),
        _au(14, "Dimpler", "lip corners and dimples", ((48, 54), -0.025, -0.015), ((60, 64), -0.025, -0.015)),
        _au(
            15,
            "Lip Corner Depressor",
            "lip corners",
            ((48, 54), 0.01, 0.075),
            ((60, 64), 0.01, 0.065),
            ((55, 59), 0, 0.03),
            ((49, 53), 0, 0.025),
        ),
        _au(
            16,
            "Lower Lip Depressor",
            "lower lip",
            ((56, 57, 58), 0, 0.065),
            ((55, 59), 0, 0.045),
            ((65, 66, 67), 0, 0.07),
        ),
        _au(
            17,
            "Chin Raiser",
            "chin and lower lip",
            ((56, 57, 58), 0, -0.045),
            ((55, 59), 0, -0.03),
            ((7, 8, 9), 0, -0.035),
            ((6, 10), 0, -0.015),
        ),
        _au(
            20,
            "Lip Stretcher",
            "mouth width",
            ((48, 54), 0.08, 0.015),
            ((60, 64), 0.07, 0.015),
            ((49, 53, 55, 59), 0.035, 0),
            ((50, 52), 0, 0.01),
            ((56, 58), 0, -0.01),
        ),
        _au(
            23,
            "Lip Tightener",
            "lips",
            ((48, 54), -0.04, 0),
            ((60, 64), -0.035, 0),
            ((49, 53), -0.02, 0.015),
            ((55, 59), -0.02, -0.015),
            ((50, 51, 52), 0, 0.025),
            ((56, 57, 58), 0, -0.025),
        ),
        _au(
            24,
            "Lip Pressor",
            "lips",
            ((50, 51, 52), 0, 0.035),
            ((49, 53), 0, 0.02),
            ((56, 57, 58), 0, -0.035),
            ((55, 59), 0, -0.02),
        ),
        _au(
            25,
            "Lips Part",
            "lips",
            ((61, 62, 63), 0, -0.01),
            ((65, 66, 67), 0, 0.045),
            ((56, 57, 58), 0, 0.035),
            ((55, 59), 0, 0.025),
        ),
        _au(
            26,
            "Jaw Drop",
            "mouth opening, jaw and chin",
            *_JAW_26,
            ((56, 57, 58), 0, 0.11),
            ((55, 59), 0, 0.09),
            ((65, 66, 67), 0, 0.115),
            ((48, 54, 60, 64), 0, 0.035),
        ),
        _au(
            27,
            "Mouth Stretch",
            "mouth opening, jaw and chin",
            *_JAW_27,
            ((56, 57, 58), 0, 0.23),
            ((55, 59), 0, 0.19),
            ((65, 66, 67), 0, 0.24),
            ((48, 54, 60, 64), -0.04, 0.08),
            ((49, 53), -0.02, 0),
            ((61, 62, 63), 0, -0.02),
            ((50, 51, 52), 0, -0.015),
        ),
    )
}

AU_NUMBERS: tuple[int, ...] = tuple(sorted(ACTION_UNITS))

# CK+ emotion codes (Emotion/*.txt); 0 is neutral and never written to a file.
CKPLUS_EMOTIONS: dict[int, str] = {
    1: "anger",
    2: "contempt",
    3: "disgust",
    4: "fear",
    5: "happy",
    6: "sadness",
    7: "surprise",
}
# TFD expression codes (labs_ex).
TFD_EMOTIONS: dict[int, str] = {
    1: "anger",
    2: "disgust",
    3: "fear",
    4: "happy",
    5: "sadness",
    6: "surprise",
    7: "neutral",
}


@dataclass(frozen=True)
class Prototype:
    required: tuple[int, ...]  # always present (the EMFACS prototype)
    optional: tuple[tuple[int, float], ...] = ()  # (AU, probability) extras, so AUs are not collinear with emotions
    swap: tuple[int, int, float] | None = None  # (AU, replacement, probability): e.g. 26 -> 27
    unilateral: bool = False  # contempt: the AUs deform one side of the face only


PROTOTYPES: dict[str, Prototype] = {
    "happy": Prototype((6, 12), ((25, 0.5), (26, 0.15), (7, 0.15))),
    "sadness": Prototype((1, 4, 15), ((17, 0.5), (25, 0.1))),
    "surprise": Prototype((1, 2, 5, 26), ((25, 0.7),), swap=(26, 27, 0.35)),
    "fear": Prototype((1, 2, 4, 5, 7, 20, 26), ((25, 0.6),), swap=(26, 27, 0.2)),
    "anger": Prototype((4, 5, 7, 23), ((24, 0.6), (17, 0.4), (25, 0.1))),
    "disgust": Prototype((9, 15, 16), ((17, 0.4), (25, 0.35), (4, 0.3), (7, 0.2), (6, 0.15))),
    "contempt": Prototype((12, 14), ((25, 0.1),), unilateral=True),
}

# Relative frequencies of the CK+ emotion classes (anger 45, contempt 18, ... surprise 83),
# flattened so small synthetic sets still hold every class.
EMOTION_WEIGHTS: dict[str, float] = {
    "anger": 45,
    "contempt": 30,
    "disgust": 55,
    "fear": 35,
    "happy": 65,
    "sadness": 35,
    "surprise": 70,
}


@dataclass(frozen=True)
class Expression:
    """The AUs of one expression at apex: ``{au: intensity in (0, 1]}``; ``side`` for unilateral AUs."""

    aus: dict[int, float]
    side: int = 0  # 0 both sides; -1 / +1 only the image-left / image-right half of the face
    unilateral: tuple[int, ...] = ()

    def scaled(self, factor: float) -> "Expression":
        return Expression({a: v * factor for a, v in self.aus.items()}, self.side, self.unilateral)


def sample_expression(emotion: str, rng: np.random.Generator) -> Expression:
    """An apex expression for ``emotion`` (a key of PROTOTYPES, or "neutral")."""
    if emotion == "neutral":
        return Expression({})
    proto = PROTOTYPES[emotion]
    required = list(proto.required)
    if proto.swap is not None and rng.random() < proto.swap[2]:
        required[required.index(proto.swap[0])] = proto.swap[1]
    aus = {au: float(rng.uniform(0.55, 1.0)) for au in required}
    for au, p in proto.optional:
        if rng.random() < p and au not in aus and not (au in (26, 27) and {26, 27} & set(aus)):
            aus[au] = float(rng.uniform(0.3, 0.8))
    if proto.unilateral:
        return Expression(aus, side=int(rng.choice([-1, 1])), unilateral=proto.required)
    return Expression(aus)


def sample_free_expression(rng: np.random.Generator) -> Expression:
    """A non-prototypical AU combination (a CK+ sequence without an emotion label)."""
    n = int(rng.integers(1, 5))
    chosen = [int(a) for a in rng.choice(AU_NUMBERS, size=n, replace=False)]
    if 26 in chosen and 27 in chosen:
        chosen.remove(27)
    return Expression({au: float(rng.uniform(0.4, 1.0)) for au in chosen})


def intensity_code(value: float) -> int:
    """FACS intensity A..E as 1..5 (CK+ writes 0 when the intensity was not coded)."""
    return int(np.clip(np.ceil(value * 5), 1, 5))
