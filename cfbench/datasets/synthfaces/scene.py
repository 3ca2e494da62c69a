"""The parameters of one synthfaces image: who (Identity), what (attributes), how (Nuisance).

All three are plain frozen dataclasses: edit them with ``dataclasses.replace`` or
:meth:`SceneParams.with_attributes` and render the result with
:func:`cfbench.datasets.synthfaces.render.render_scenes`. Lengths are in *design
units*: pixels of the 128 px image, origin top-left, y down.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from cfbench.datasets.synthfaces.spec import ATTRIBUTES, INDEX

CX, CY = 64.0, 68.0  # face centre, design units
IDENTITY_UNIFORMS = 48  # uniforms reserved per identity (each field reads a fixed column)
NUISANCE_UNIFORMS = 32

SKIN_TONES = np.array(
    [(238, 201, 174), (226, 180, 148), (204, 152, 116), (170, 120, 86), (132, 90, 63), (98, 67, 48)], float
)
PALE = np.array((250, 237, 231), float)
BLACK_HAIR = np.array((30, 27, 27), float)
BLOND_LIGHT, BLOND_GOLD = np.array((240, 220, 166), float), np.array((214, 172, 96), float)
OTHER_HAIR = np.array([(112, 72, 44), (136, 80, 44), (160, 70, 40), (158, 118, 80), (180, 96, 50)], float)
GREY = np.array((196, 196, 194), float)
IRIS = np.array([(104, 64, 36), (62, 40, 26), (70, 122, 172), (78, 122, 72), (134, 102, 52), (118, 130, 144)], float)
LIPSTICK = np.array([(196, 28, 48), (160, 20, 62), (218, 64, 104), (134, 30, 76), (222, 82, 72)], float)
EYESHADOW = np.array([(96, 72, 156), (60, 112, 176), (146, 94, 58), (62, 126, 92), (176, 82, 126)], float)
FRAMES = np.array([(18, 18, 20), (74, 42, 26), (30, 42, 96), (150, 28, 32), (96, 96, 106)], float)
HATS = np.array(
    [(184, 42, 42), (42, 62, 142), (44, 112, 62), (204, 172, 60), (58, 58, 62), (232, 230, 222), (122, 70, 142),
     (212, 112, 40)],
    float,
)
ROSY = (226, 62, 78)


def _lerp(u: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(u)


def _pick(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


@dataclass(frozen=True)
class Identity:
    """Persistent traits of one person (design units unless stated)."""

    face_width: float  # half-width of the face
    face_height: float  # half-height, forehead top to chin
    jaw: float  # 0 round … 1 square
    chin: float  # 0 broad … 1 pointed
    skin_tone: float  # 0 light … 1 dark (never pale: that is the Pale_Skin attribute)
    skin_warmth: float  # -1 … 1
    eye_spacing: float  # half distance between eye centres
    eye_y: float  # vertical offset of the eyes
    eye_width: float  # half-width of an eye
    eye_height: float  # half-height of the upper lid
    eye_tilt: float  # radians, outer corners up when > 0
    iris: int  # index into IRIS
    brow_thickness: float
    brow_arch: float
    brow_gap: float  # eye centre to brow
    brow_tilt: float  # outer end up (> 0) or down
    nose_length: float  # eye line to nose tip
    nose_width: float
    mouth_width: float  # half-width at rest
    lip_thickness: float
    ear_size: float
    hair_style_f: int  # 0 long straight, 1 bob, 2 long wavy (used when Male = 0)
    hair_style_m: int  # 0 short crop, 1 side part, 2 quiff (used when Male = 1)
    hairline: float  # hairline height as a fraction of face_height above the centre
    hair_part: float  # -1 … 1, where the parting sits
    hair_volume: float  # 0 … 1
    hair_length: float  # 0 … 1
    hair_wave: float  # 0 … 1
    hair_shade: int  # index into OTHER_HAIR (hair that is neither black nor blond)
    hair_tint: float  # 0 … 1 shade within the colour
    bangs_slant: float  # -1 … 1
    glasses_shape: float  # 0 round … 1 rectangular
    glasses_colour: int  # index into FRAMES
    glasses_frame: float  # frame line width
    lipstick: int  # index into LIPSTICK
    eyeshadow: int  # index into EYESHADOW
    mustache_droop: float  # 0 … 1
    mustache_thickness: float
    spots: float  # seed of the age-spot layout
    neck_width: float
    mole_x: float  # -1 … 1 across the face
    mole_y: float  # 0 … 1 from the eyes to the jaw
    mole: float  # mole size; 0 = no mole (about 40 % of people)
    freckles: float  # freckle strength; 0 = none (about 75 % of people)

    @classmethod
    def from_uniforms(cls, u: Sequence[float]) -> Identity:
        u = [float(x) for x in u]
        return cls(
            face_width=_lerp(u[0], 24.0, 30.0),
            face_height=_lerp(u[1], 33.0, 39.0),
            jaw=u[2],
            chin=u[3],
            skin_tone=u[4],
            skin_warmth=_lerp(u[5], -1, 1),
            eye_spacing=_lerp(u[6], 10.5, 13.0),
            eye_y=_lerp(u[7], -2.0, 1.5),
            eye_width=_lerp(u[8], 4.8, 6.4),
            eye_height=_lerp(u[9], 2.3, 3.3),
            eye_tilt=_lerp(u[10], -0.12, 0.14),
            iris=_pick(u[11], len(IRIS)),
            brow_thickness=_lerp(u[12], 1.5, 2.6),
            brow_arch=_lerp(u[13], 0.0, 2.2),
            brow_gap=_lerp(u[14], 5.0, 7.0),
            brow_tilt=_lerp(u[15], -1.2, 1.5),
            nose_length=_lerp(u[16], 12.0, 15.5),
            nose_width=_lerp(u[17], 3.8, 6.2),
            mouth_width=_lerp(u[18], 8.5, 11.5),
            lip_thickness=_lerp(u[19], 1.6, 3.0),
            ear_size=_lerp(u[20], 0.85, 1.15),
            hair_style_f=_pick(u[21], 3),
            hair_style_m=_pick(u[22], 3),
            hairline=_lerp(u[23], 0.50, 0.70),
            hair_part=_lerp(u[24], -1, 1),
            hair_volume=u[25],
            hair_length=u[26],
            hair_wave=u[27],
            hair_shade=_pick(u[28], len(OTHER_HAIR)),
            hair_tint=u[29],
            bangs_slant=_lerp(u[30], -1, 1),
            glasses_shape=u[31],
            glasses_colour=_pick(u[32], len(FRAMES)),
            glasses_frame=_lerp(u[33], 1.5, 2.3),
            lipstick=_pick(u[34], len(LIPSTICK)),
            eyeshadow=_pick(u[35], len(EYESHADOW)),
            mustache_droop=u[36],
            mustache_thickness=_lerp(u[37], 3.2, 4.6),
            spots=u[38],
            neck_width=_lerp(u[39], 0.36, 0.46),
            mole_x=_lerp(u[40], -1, 1),
            mole_y=u[41],
            mole=0.0 if u[42] < 0.4 else _lerp(u[42], 0.8, 1.4),
            freckles=0.0 if u[43] < 0.75 else _lerp(u[43], 0.35, 0.6),
        )


@dataclass(frozen=True)
class Nuisance:
    """Per-image factors that carry no label: background, lighting, pose, noise."""

    background: tuple[float, float, float]  # RGB 0…255
    shirt: tuple[float, float, float]
    light_angle: float  # radians, direction the light comes from
    light_strength: float  # 0 … 0.3, amplitude of the linear lighting gradient
    ambient: float  # overall brightness gain
    tint: tuple[float, float, float]  # per-channel white-balance gains
    shift_x: float  # design units
    shift_y: float
    scale: float
    rotation: float  # radians
    yaw: float  # horizontal offset of the inner features (a hint of head turn)
    gaze: float  # horizontal iris offset
    noise: float  # std of the Gaussian sensor noise, in [0, 1] intensity units
    noise_x: int  # offset into the fixed noise texture
    noise_y: int
    hat_style: int  # 0 beanie, 1 cap, 2 fedora (drawn only when Wearing_Hat = 1)
    hat_colour: int  # index into HATS

    @classmethod
    def from_uniforms(cls, u: Sequence[float]) -> Nuisance:
        u = [float(x) for x in u]
        bg = colorsys.hsv_to_rgb(u[0], _lerp(u[1], 0.05, 0.55), _lerp(u[2], 0.35, 0.95))
        shirt = colorsys.hsv_to_rgb(u[3], _lerp(u[4], 0.1, 0.8), _lerp(u[5], 0.2, 0.9))
        return cls(
            background=tuple(255 * c for c in bg),
            shirt=tuple(255 * c for c in shirt),
            light_angle=_lerp(u[6], -math.pi, math.pi),
            light_strength=_lerp(u[7], 0.0, 0.22),
            ambient=_lerp(u[8], 0.88, 1.08),
            tint=(_lerp(u[9], 0.95, 1.05), 1.0, _lerp(u[10], 0.95, 1.05)),
            shift_x=_lerp(u[11], -4, 4),
            shift_y=_lerp(u[12], -3, 3),
            scale=_lerp(u[13], 0.93, 1.06),
            rotation=_lerp(u[14], -0.13, 0.13),
            yaw=_lerp(u[15], -2.0, 2.0),
            gaze=_lerp(u[16], -0.6, 0.6),
            noise=_lerp(u[17], 0.004, 0.022),
            noise_x=_pick(u[18], 128),
            noise_y=_pick(u[19], 128),
            hat_style=_pick(u[20], 3),
            hat_colour=_pick(u[21], len(HATS)),
        )


@dataclass(frozen=True)
class SceneParams:
    """Everything that determines one image. Edit it with :meth:`with_attributes`."""

    identity: Identity
    attributes: tuple[int, ...]  # 0/1 in spec.ATTRIBUTES order
    nuisance: Nuisance

    def attribute(self, name: str) -> int:
        return self.attributes[INDEX[name]]

    def attribute_dict(self) -> dict[str, int]:
        return dict(zip(ATTRIBUTES, self.attributes))

    def with_attributes(self, overrides: Mapping[str, int] | None = None, **kw: int) -> SceneParams:
        """The same person and nuisance with some attributes set (0/1) or toggled ("flip")."""
        values = list(self.attributes)
        for name, v in {**(overrides or {}), **kw}.items():
            if name not in INDEX:
                raise KeyError(f"unknown synthfaces attribute {name!r}; known: {', '.join(ATTRIBUTES)}")
            values[INDEX[name]] = 1 - values[INDEX[name]] if v == "flip" else int(bool(v))
        return replace(self, attributes=tuple(values))

    def render(self, size: int = 128, supersample: int = 2) -> np.ndarray:
        """This scene as a float32 (size, size, 3) image in [0, 1]."""
        from cfbench.datasets.synthfaces.render import render_scenes

        return render_scenes([self], size, supersample)[0].transpose(1, 2, 0).copy()


def attribute_tuple(attributes: Mapping[str, int] | Sequence[int] | np.ndarray) -> tuple[int, ...]:
    """Attributes as a 0/1 tuple in ATTRIBUTES order (a mapping may omit names: they are 0)."""
    if type(attributes) is tuple and len(attributes) == len(ATTRIBUTES) and all(v in (0, 1) for v in attributes):
        return tuple(int(v) for v in attributes)
    if isinstance(attributes, Mapping):
        unknown = [k for k in attributes if k not in INDEX]
        if unknown:
            raise KeyError(f"unknown synthfaces attribute(s) {unknown}; known: {', '.join(ATTRIBUTES)}")
        return tuple(int(bool(attributes.get(a, 0))) for a in ATTRIBUTES)
    values = tuple(int(bool(v)) for v in np.asarray(attributes).ravel())
    if len(values) != len(ATTRIBUTES):
        raise ValueError(f"expected {len(ATTRIBUTES)} attribute values, got {len(values)}")
    return values
