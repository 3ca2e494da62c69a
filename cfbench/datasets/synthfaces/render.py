"""Procedural, deterministic face renderer: (identity, attributes, nuisance) → RGB image.

How it works:

1. *Plan* (vectorised over a batch of scenes): every shape of the face is computed in
   numpy for all images at once, in design units (pixels of the 128 px image, origin
   top-left, y down); points are complex numbers x + iy. A shape that some images of
   the batch show and others do not (a hat) is computed for all and marked inactive
   where it is not shown; a shape no image shows is skipped.
2. *Pose*: one complex multiply-add per point maps design units to canvas pixels
   (scale, rotation, shift: the pose jitter of the nuisance).
3. *Draw* (per image): PIL fills the active polygons and polylines in a fixed
   painter's order on a canvas ``supersample`` times the output size, which is then
   box-filtered down (anti-aliasing).
4. *Light and noise*: ambient + linear light gradient, white balance, and sensor
   noise read from a fixed texture at a per-image offset.

Each step is a pure function of the scene, so the same scene gives the same pixels
whether rendered alone or in any batch, and changing one attribute redraws only the
shapes that attribute owns (see ``docs/synthfaces.md``).
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache
from types import SimpleNamespace
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from cfbench.datasets.synthfaces.scene import (
    BLACK_HAIR,
    BLOND_GOLD,
    BLOND_LIGHT,
    CX,
    CY,
    EYESHADOW,
    FRAMES,
    GREY,
    HATS,
    IRIS,
    LIPSTICK,
    OTHER_HAIR,
    PALE,
    ROSY,
    SKIN_TONES,
    Identity,
    Nuisance,
    SceneParams,
    attribute_tuple,
)
from cfbench.datasets.synthfaces.spec import ATTRIBUTES

ZOOM = 1.12  # framing: design units are drawn 12 % larger about PIVOT
PIVOT = complex(CX, CY + 10.0)
CHEEK_RX, CHEEK_RY = 6.2, 4.6
REGIONS = ("cheeks", "mouth", "eyes", "face")

# ----------------------------------------------------------------------------- templates

_UNIT = {n: np.exp(2j * np.pi * np.arange(n) / n) for n in (8, 12, 16, 24, 32, 64)}
_UPPER = np.exp(1j * np.linspace(np.pi, 2 * np.pi, 33))  # left → top → right half circle (y down)
_T9, _T13, _T15, _T17, _T21 = (np.linspace(-1.0, 1.0, n) for n in (9, 13, 15, 17, 21))
_L6, _L8, _L10 = (np.linspace(0.0, 1.0, n) for n in (6, 8, 10))
_B9 = np.linspace(0.0, 1.0, 9)
_ODD21 = np.where(np.arange(21) % 2 == 0, 0.0, -2.4)
_EYE_UP, _EYE_LO, _EYE_SH = (1.0 - _T13**2) ** 0.8, (1.0 - _T13**2) ** 1.1, (1.0 - _T13**2) ** 0.5
_MOUTH_SHAPE = (1.0 - _T15**2) ** 0.7
_MOUTH_BOW = 0.5 * np.exp(-(((np.abs(_T15) - 0.25) / 0.18) ** 2))
_FRECKLES = np.array([complex(x, y) for x, y in ((-0.45, 0.2), (-0.3, 0.05), (-0.2, 0.3), (-0.55, 0.4),
                                                  (0.45, 0.15), (0.3, 0.3), (0.2, 0.05), (0.55, 0.35),
                                                  (-0.08, 0.12), (0.1, 0.22))])
_SIDES = (-1.0, 1.0)

_IDENTITY_FIELDS = tuple(Identity.__dataclass_fields__)


def _ellipse(c, rx, ry, n: int = 24, rot: float = 0.0) -> np.ndarray:
    z = rx * _UNIT[n].real + 1j * ry * _UNIT[n].imag
    return c + (z * complex(math.cos(rot), math.sin(rot)) if rot else z)


def _superellipse(c, rx, ry, n_exp, n: int = 32) -> np.ndarray:
    u = _UNIT[n]
    e = 2.0 / n_exp
    return c + rx * np.sign(u.real) * np.abs(u.real) ** e + 1j * ry * np.sign(u.imag) * np.abs(u.imag) ** e


def _band(xs, top, bottom) -> np.ndarray:
    """Polygons between the curves y = top(x) and y = bottom(x), one per row."""
    xs, top, bottom = np.broadcast_arrays(xs, top, bottom)
    return np.concatenate((xs + 1j * top, (xs + 1j * bottom)[:, ::-1]), axis=1)


def _pts(*cols) -> np.ndarray:
    """(N, k) points from k columns (scalars or (N, 1) arrays)."""
    cols = [np.asarray(c, dtype=np.complex128).reshape(-1, 1) for c in cols]
    return np.concatenate(np.broadcast_arrays(*cols), axis=1)


def _clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)  # np.clip's Python wrapper costs ~5 µs a call


def _mix(a, b, t):
    return a * (1.0 - t) + b * t


class _Plan:
    """The shapes of N images in painter's order: points, colour, line width, visibility."""

    def __init__(self, n: int):
        self.n = n
        self.points: list[np.ndarray] = []
        self.layers: list[tuple] = []  # (n points, colours, width, active)

    def colours(self, rgb: np.ndarray, alpha: float | None = None) -> list[tuple[int, ...]]:
        """Per-image colour tuples from an (N, 3) array (optionally with a fixed alpha)."""
        v = _clip(np.rint(rgb), 0.0, 255.0).astype(np.int64).tolist()
        if alpha is None:
            return [tuple(c) for c in v]
        a = int(round(255 * alpha))
        return [(c[0], c[1], c[2], a) for c in v]

    def on(self, mask: np.ndarray) -> list[bool] | None:
        """Which images show a shape, from an (N, 1) mask; None when none does."""
        v = mask.ravel().tolist()
        return v if True in v else None

    def add(self, z: np.ndarray, colour, width=0.0, active: list[bool] | None = None) -> None:
        """A polygon (width 0) or polyline (width in design units, scalar or (N, 1)).

        ``z``: (N, k) or (k,) complex points; ``colour``: one tuple for all images or a
        list of N tuples; ``active``: from :meth:`on`, None = every image.
        """
        if z.ndim == 1 or z.shape[0] != self.n:
            z = np.broadcast_to(z, (self.n, z.shape[-1]))
        if type(width) is not float:
            width = float(width) if np.ndim(width) == 0 else np.broadcast_to(width, (self.n, 1)).ravel().tolist()
        self.points.append(z)
        self.layers.append((z.shape[1], colour, width, active))


_NUISANCE_SCALARS = ("light_angle", "light_strength", "ambient", "shift_x", "shift_y", "scale", "rotation", "yaw",
                     "gaze", "noise", "noise_x", "noise_y", "hat_style", "hat_colour")


def _gather(scenes: Sequence[SceneParams]):
    """The scenes' parameters as (N, 1) columns (I: identity, U: nuisance, A: attributes)."""
    ident = np.array([[getattr(s.identity, f) for f in _IDENTITY_FIELDS] for s in scenes], dtype=np.float64)
    I = SimpleNamespace(**{f: ident[:, j : j + 1] for j, f in enumerate(_IDENTITY_FIELDS)})
    nus = [s.nuisance for s in scenes]
    U = SimpleNamespace(
        background=np.array([x.background for x in nus], dtype=np.float64),
        shirt=np.array([x.shirt for x in nus], dtype=np.float64),
        tint=np.array([x.tint for x in nus], dtype=np.float64),
        **{f: np.array([getattr(x, f) for x in nus], dtype=np.float64)[:, None] for f in _NUISANCE_SCALARS},
    )
    att = np.array([attribute_tuple(s.attributes) for s in scenes], dtype=bool).reshape(len(scenes), len(ATTRIBUTES))
    A = {name: att[:, j : j + 1] for j, name in enumerate(ATTRIBUTES)}
    return I, U, A


def _layout(I, A, U) -> SimpleNamespace:
    """Where the face parts sit, (N, 1) columns. Only identity, Male, Young and pose move them."""
    male, young = A["Male"], A["Young"]
    g = SimpleNamespace()
    g.a = I.face_width + 1.8 * male
    g.b = I.face_height
    g.ey = CY - 0.08 * g.b + I.eye_y
    g.ny = g.ey + I.nose_length
    g.yaw = U.yaw
    g.es, g.ew = I.eye_spacing, I.eye_width
    g.eh = I.eye_height * np.where(young, 1.06, 0.94)
    g.my = np.minimum(g.ny + 8.5 + 0.5 * I.lip_thickness, CY + g.b - 9.0)
    g.mx, g.nx, g.mw = CX + 0.9 * g.yaw, CX + 1.4 * g.yaw, I.mouth_width
    g.cheeks = [CX + s * 0.62 * g.a + 0.6 * g.yaw + 1j * (g.ey + 9.0) for s in _SIDES]
    g.jaw_n = 2.0 + 0.8 * I.jaw + 0.6 * male
    g.taper = I.chin * (1.0 - 0.5 * male)
    return g


def _face_outline(g) -> np.ndarray:
    c, s = _UNIT[64].real, _UNIT[64].imag
    e = np.where(s > 0, 2.0 / g.jaw_n, 2.0 / 2.1)
    fx = g.a * np.sign(c) * np.abs(c) ** e * (1.0 - 0.30 * g.taper * np.maximum(s, 0.0) ** 2)
    return (CX + fx) + 1j * (CY + g.b * np.sign(s) * np.abs(s) ** e)


def _half_width(g, y) -> np.ndarray:
    """Half-width of the face outline at height y (inverse of the outline's parametrisation)."""
    r = np.minimum(np.abs(y - CY) / g.b, 1.0)
    lower = y > CY
    n = np.where(lower, g.jaw_n, 2.1)
    s = r ** (n / 2.0)
    c = np.sqrt(np.maximum(1.0 - s * s, 0.0))
    return g.a * c ** (2.0 / n) * np.where(lower, 1.0 - 0.30 * g.taper * s * s, 1.0)


def _plan(scenes: Sequence[SceneParams]) -> tuple[_Plan, SimpleNamespace]:
    N = len(scenes)
    I, U, A = _gather(scenes)
    P = _Plan(N)
    on = P.on
    male, young, bald = A["Male"], A["Young"], A["Bald"]
    female, old, hairy = ~male, ~young, ~bald
    smiling, mouth_open, makeup = A["Smiling"], A["Mouth_Slightly_Open"], A["Heavy_Makeup"]
    blond, black = A["Blond_Hair"], A["Black_Hair"]

    # ---- colours (Pale_Skin, Young, hair colours and Heavy_Makeup act here)
    t = I.skin_tone * (len(SKIN_TONES) - 1)
    i0 = np.minimum(t.astype(np.int64), len(SKIN_TONES) - 2)[:, 0]
    f = t - i0[:, None]
    skin = SKIN_TONES[i0] * (1.0 - f) + SKIN_TONES[i0 + 1] * f + np.array([5.0, 0.0, -5.0]) * I.skin_warmth
    skin = np.where(young, skin, _mix(skin, skin.mean(1, keepdims=True), 0.14) * 0.96)
    skin = np.where(A["Pale_Skin"], _mix(skin, PALE, 0.82), skin)
    other = OTHER_HAIR[I.hair_shade.astype(np.int64)[:, 0]] * (0.92 + 0.16 * I.hair_tint)
    hair = np.where(black, BLACK_HAIR + 8.0 * I.hair_tint, np.where(blond, _mix(BLOND_LIGHT, BLOND_GOLD, I.hair_tint), other))
    hair = np.where(young, hair, _mix(_mix(hair, hair.mean(1, keepdims=True), 0.25), GREY, 0.5))  # greying
    c_skin = P.colours(skin)
    c_skin_dark = P.colours(skin * np.array([0.80, 0.74, 0.74]))
    c_hair = P.colours(hair)
    c_strand = P.colours(hair * 0.86)
    c_dark_hair = P.colours(hair * np.where(blond, 0.62, np.where(black, 0.9, 0.8)))  # brows, mustache
    lips = np.where(makeup, LIPSTICK[I.lipstick.astype(np.int64)[:, 0]],
                    skin * np.array([0.86, 0.60, 0.60]) + np.array([14.0, 0.0, 0.0]))
    c_lips = P.colours(lips)
    c_lid = (30, 22, 20)

    g = _layout(I, A, U)
    a, b, ey, yaw, es, ew, eh = g.a, g.b, g.ey, g.yaw, g.es, g.ew, g.eh
    ny, my, mw, mx, nx = g.ny, g.my, g.mw, g.mx, g.nx
    style = np.where(male, I.hair_style_m, I.hair_style_f)
    vol = np.where(male, 1.5 + 2.5 * I.hair_volume + 2.0 * (style == 2) - 1.0 * (style == 0), 3.5 + 4.5 * I.hair_volume)
    y_temple = ey - 5.0
    y_hl = CY - I.hairline * b
    hair_top = (CX + (a + vol) * _UPPER.real) + 1j * (CY + (b + vol) * _UPPER.imag)
    wavy = (style == 2) * I.hair_wave

    # ---- shoulders and neck
    P.add(_ellipse(complex(CX, 150.0), 58.0, 40.0, 32), P.colours(U.shirt))
    nw = I.neck_width * a * np.where(male, 1.12, 1.0)
    y0 = CY + 0.4 * b
    P.add(_pts(CX - nw + 1j * y0, CX + nw + 1j * y0, CX + nw + 1 + 116j, complex(CX, 121.0), CX - nw - 1 + 116j),
          c_skin_dark)

    # ---- hair behind the head (Bald: only a ring at the sides)
    long_hair = on(female & hairy)
    if long_hair:
        y_end = np.where(style == 1, CY + 0.45 * b + 6.0 * I.hair_length, CY + b + 6.0 + 18.0 * I.hair_length)
        ys = CY + (y_end - CY) * _L8
        spread = a + vol + (2.0 + 4.0 * I.hair_volume) * _L8 + wavy * 2.2 * np.sin((ys - CY) / 5.0)
        end = spread[:, -1:]
        bottom = CX + end * np.linspace(1.0, -1.0, 9)[1:-1] + 1j * (y_end + 1.5 * np.cos(np.arange(1, 8) * 2.1))
        P.add(np.concatenate((hair_top, CX + spread + 1j * ys, bottom, (CX - spread + 1j * ys)[:, ::-1]), axis=1),
              c_hair, active=long_hair)
    short_hair = on(male & hairy)
    if short_hair:
        low = ey + 4.0
        P.add(np.concatenate((hair_top, _pts(CX + a + 0.5 * vol + 1j * low, CX - a - 0.5 * vol + 1j * low)), axis=1),
              c_hair, active=short_hair)
    is_bald = on(bald)
    if is_bald:
        ys = ey - 9.0 + 16.0 * _L6
        hw = _half_width(g, ys)
        for s in _SIDES:
            P.add(np.concatenate((CX + s * (hw + 2.6) + 1j * ys, (CX + s * (hw - 1.0) + 1j * ys)[:, ::-1]), axis=1),
                  c_hair, active=is_bald)

    # ---- ears (long hair covers them)
    ears = on(male | bald)
    if ears:
        ear_x = _half_width(g, ey + 3.0) - 0.5
        c_ear = P.colours(skin * np.array([0.69, 0.64, 0.64]))
        for s in _SIDES:
            P.add(_ellipse(CX + s * ear_x + 1j * (ey + 3.5), 3.6 * I.ear_size, 7.0 * I.ear_size, 16), c_skin_dark,
                  active=ears)
            P.add(_ellipse(CX + s * (ear_x + 0.6) + 1j * (ey + 3.5), 2.0 * I.ear_size, 4.6 * I.ear_size, 12), c_ear,
                  active=ears)

    # ---- face, scalp shine, identity marks (mole, freckles)
    P.add(_face_outline(g), c_skin)
    if is_bald:
        P.add(_ellipse(CX - 0.25 * a + 1j * (CY - 0.8 * b), 0.28 * a, 0.09 * b, 16, rot=-0.25), (255, 255, 255, 46),
              active=is_bald)
    mole = on(I.mole > 0)
    if mole:
        P.add(_ellipse(CX + I.mole_x * 0.7 * a + yaw * 0.6 + 1j * (ey + 4.0 + I.mole_y * (CY + b - ey - 10.0)),
                       I.mole, I.mole * 0.9, 12), P.colours(skin * np.array([0.55, 0.45, 0.42])), active=mole)
    freckled = on(I.freckles > 0)
    if freckled:
        c_freckle = P.colours(skin * np.array([0.78, 0.66, 0.60]), 0.8)
        for z in _FRECKLES:
            P.add(_ellipse(CX + z.real * a + yaw * 0.8 + 1j * (ey + 4.0 + z.imag * b * 0.5), I.freckles, I.freckles, 8),
                  c_freckle, active=freckled)

    # ---- Rosy_Cheeks: soft red patches on the cheekbones, clear of the mouth
    rosy = on(A["Rosy_Cheeks"])
    if rosy:
        for cc in g.cheeks:
            for r, al in ((1.0, 0.16), (0.78, 0.18), (0.55, 0.22)):
                P.add(_ellipse(cc, CHEEK_RX * r, CHEEK_RY * r, 24), (*ROSY, round(255 * al)), active=rosy)

    # ---- eyes (Heavy_Makeup: eyeshadow and heavier liner; Male: no lashes)
    c_iris = P.colours(IRIS[I.iris.astype(np.int64)[:, 0]])
    c_lower_lid = P.colours(skin * np.array([0.78, 0.72, 0.72]))
    shadowed, lashes = on(makeup), on(female)
    if shadowed:
        c_eyeshadow = P.colours(EYESHADOW[I.eyeshadow.astype(np.int64)[:, 0]], 0.75)
    lid_w = np.where(male, 1.0, 1.5) + np.where(makeup, 0.6, 0.0)
    ir = eh * 0.98
    for s in _SIDES:
        ex = CX + s * es + yaw
        tilt = -I.eye_tilt * ew * s
        xs = ex + _T13 * ew
        up_y = ey - eh * _EYE_UP + tilt * _T13
        lo_y = ey + 0.72 * eh * _EYE_LO + tilt * _T13
        P.add(_band(xs, up_y, lo_y), (242, 240, 236))
        icx, icy = ex + U.gaze * ew * 0.35, ey - 0.2
        for r, col in ((ir, c_iris), (ir * 0.48, (14, 12, 12))):  # clipped to the opening
            px = icx + r * _UNIT[16].real
            tt = _clip((px - ex) / ew, -1.0, 1.0)
            top = ey - eh * (1.0 - tt**2) ** 0.8 + tilt * tt
            bot = ey + 0.72 * eh * (1.0 - tt**2) ** 1.1 + tilt * tt
            P.add(px + 1j * _clip(icy + r * _UNIT[16].imag, top, bot), col)
        P.add(_ellipse(icx + 0.35 * ir + 1j * (icy - 0.35 * ir), ir * 0.22, ir * 0.22, 12), (250, 250, 250))
        if shadowed:
            P.add(_band(xs, up_y - 3.6 * _EYE_SH - 0.6, up_y), c_eyeshadow, active=shadowed)
        P.add(xs + 1j * up_y, c_lid, lid_w)
        P.add(xs[:, 2:-2] + 1j * (lo_y[:, 2:-2] + 0.3), c_lower_lid, 0.8)
        if lashes:
            k = 12 if s > 0 else 0
            z0 = xs[:, k : k + 1] + 1j * up_y[:, k : k + 1]
            P.add(np.concatenate((z0, z0 + complex(1.8 * s, -1.4)), axis=1), c_lid, 1.0, active=lashes)

    # ---- age (Young = 0): crow's feet, eye bags, nasolabial folds, forehead lines, spots
    aged = on(old)
    if aged:
        c_wrinkle = P.colours(skin * 0.62, 0.55)
        c_fold = P.colours(skin * 0.60, 0.60)
        for s in _SIDES:
            ex = CX + s * es + yaw
            ox = ex + s * (ew + 1.2)
            for d in (-1.6, 0.0, 1.6):
                P.add(_pts(ox + 1j * (ey + d * 0.6), ox + s * 3.2 + 1j * (ey + d * 1.4)), c_wrinkle, 0.9, active=aged)
            bt = _T9[1:-1]
            P.add(ex + bt * ew * 0.85 + 1j * (ey + 0.72 * eh + 2.2 + 1.4 * (1 - bt**2)), c_wrinkle, 1.0, active=aged)
            P.add(_pts(CX + s * (I.nose_width + 1.5) + yaw + 1j * (ny - 1.5),
                       CX + s * (I.nose_width + 3.6) + yaw + 1j * (ny + 3.5),
                       CX + s * (mw + 1.8) + 0.5 * yaw + 1j * (my + 1.0),
                       CX + s * (mw + 1.6) + 0.5 * yaw + 1j * (my + 3.5)), c_fold, 1.3, active=aged)
            P.add(_pts(CX + s * (mw + 0.5) + 1j * (my + 3.5), CX + s * (mw + 1.0) + 1j * (my + 8.0)), c_wrinkle, 0.9,
                  active=aged)
        fh_top, fh_bot = y_hl + 2.0, ey - I.brow_gap - 2.5
        xs = CX + 0.55 * a * _T9
        for j in range(3):
            y = fh_top + (fh_bot - fh_top) * (j + 0.5) / 3.0
            P.add(xs + 1j * (y + 0.5 * np.sin(xs * 0.35 + j)), c_wrinkle, 0.9, active=aged)
        c_spot = P.colours(skin * 0.78, 0.6)
        for j in range(4):
            hx = (np.sin((I.spots + 0.37 * j) * 12.9898 + 78.233) * 43758.5453) % 1.0
            hy = (np.sin((I.spots + 0.37 * j + 0.11) * 12.9898 + 78.233) * 43758.5453) % 1.0
            P.add(_ellipse(CX + (2 * hx - 1) * 0.7 * a + 1j * (CY + (0.8 * hy - 0.5) * b), 0.9, 0.8, 12), c_spot,
                  active=aged)

    # ---- nose
    nwid = I.nose_width
    P.add(_pts(nx - 1.8 + 1j * (ey + 2.5), nx - 2.4 + 1j * (ny - 4.0), nx - nwid * 0.7 + 1j * (ny - 0.8)),
          P.colours(skin * np.array([0.80, 0.74, 0.74]), 0.55), 1.0)
    P.add(nx + nwid * _T9 + 1j * (ny + 1.0 + 1.2 * np.cos(1.4 * _T9)),
          P.colours(skin * np.array([0.72, 0.67, 0.67]), 0.8), 1.0)
    c_nostril = P.colours(skin * np.array([0.44, 0.40, 0.40]))
    for s in _SIDES:
        P.add(_ellipse(nx + s * nwid * 0.45 + 1j * (ny + 0.9), 1.3, 0.8, 12), c_nostril)

    # ---- mouth: Smiling lifts the corners, widens the mouth and shows teeth;
    #      Mouth_Slightly_Open adds a dark gap between the lips.
    half = mw * np.where(smiling, 1.32, 1.0)
    lift = np.where(smiling, 6.0, -0.5)
    teeth = np.where(smiling, 4.8, 0.0)
    gap = np.where(mouth_open, 5.0, 0.0)
    mid = my - lift * _T15**2 + np.where(smiling, 2.0, 0.0) * _MOUTH_SHAPE
    opening = (teeth + gap) * _MOUTH_SHAPE
    up_in, lo_in = mid - opening * 0.45, mid + opening * 0.55
    lt = I.lip_thickness * np.where(young, 1.0, 0.8)
    up_out = up_in - lt * 0.8 * (1.0 - _T15**2) ** 0.5 - _MOUTH_BOW * lt * 0.4
    lo_out = lo_in + lt * 1.15 * (1.0 - _T15**2) ** 0.5
    X = mx + half * _T15
    parted, toothy, closed = on(smiling | mouth_open), on(smiling), on(~(smiling | mouth_open))
    if parted:
        P.add(_band(X, up_in, lo_in), (70, 22, 28), active=parted)
    if toothy:
        P.add(_band(X[:, 2:-2], up_in[:, 2:-2], np.minimum(up_in + teeth * _MOUTH_SHAPE, lo_in)[:, 2:-2]),
              (238, 235, 228), active=toothy)
    P.add(_band(X, up_out, up_in + 0.3), c_lips)
    P.add(_band(X, lo_in - 0.3, lo_out), c_lips)
    if closed:
        P.add(X + 1j * mid, P.colours(lips * 0.55), 0.9, active=closed)

    # ---- mustache (over the upper lip)
    mustache = on(A["Mustache"])
    if mustache:
        base = my - lt * 0.8 - 0.4 + I.mustache_droop * 2.5 * _T13**4
        top = base - I.mustache_thickness * (1.0 - 0.45 * _T13**2) - 0.6 * (1 - _T13**2)
        P.add(_band(mx + mw * 1.02 * _T13, top, base + 0.8), c_dark_hair, active=mustache)

    # ---- brows (thicker and lower for Male)
    thick = I.brow_thickness * np.where(male, 1.35, 1.0) * (1.0 - 0.55 * _B9)
    arch = ey - I.brow_gap - np.where(male, 0.8, 0.0) - I.brow_arch * np.sin(_B9 * math.pi * 0.9) - I.brow_tilt * _B9
    for s in _SIDES:
        P.add(_band(CX + s * es + yaw + s * (-ew * 0.95 + _B9 * ew * 2.15), arch - thick / 2, arch + thick / 2),
              c_dark_hair)

    # ---- hair in front: top cap down to the hairline, side curtains (long hair), strands
    has_hair = on(hairy)
    part = I.hair_part * 0.6
    if has_hair:
        hl = y_hl + (y_temple - y_hl) * np.abs(_T17) ** 4 + 2.2 * np.exp(-(((_T17 - part) / 0.08) ** 2))
        hl[:, 0] = hl[:, -1] = y_temple[:, 0]
        P.add(np.concatenate((hair_top, (CX + a * 1.02 * _T17 + 1j * hl)[:, ::-1]), axis=1), c_hair, active=has_hair)
    if long_hair:
        y_side = np.where(style == 1, CY + 0.45 * b + 6.0 * I.hair_length, CY + b + 4.0 + 14.0 * I.hair_length)
        ys = (y_temple - 2.0) + (y_side - y_temple + 2.0) * _L10
        wave = wavy * 1.6 * np.sin((ys - CY) / 4.0)
        hw = _half_width(g, np.minimum(ys, CY + 0.3 * b))
        grow = _clip((ys - y_temple) / 30.0, 0.0, 1.0)
        inner = hw - 2.2 - 0.8 * grow + wave * 0.5
        outer = a + vol + (2.0 + 4.0 * I.hair_volume) * grow + wave
        for s in _SIDES:
            P.add(np.concatenate((CX + s * inner + 1j * ys, (CX + s * outer + 1j * ys)[:, ::-1]), axis=1), c_hair,
                  active=long_hair)
    if has_hair:
        zp = CX + a * part + 1j * (y_hl - vol * 0.6)
        tips = [CX + a * _clip(part + (j - 2) * 0.28, -0.85, 0.85) + 1j * (y_hl + 1.0) for j in range(5)]
        P.add(_pts(zp, tips[0], zp, tips[1], zp, tips[2], zp, tips[3], zp, tips[4], zp), c_strand, 0.8, active=has_hair)

    # ---- Bangs: a fringe over the forehead
    bangs = on(A["Bangs"])
    if bangs:
        fringe = ey - I.brow_gap - 1.2 + 1.6 * I.bangs_slant * _T21 - 1.0 * _T21**2 + _ODD21
        P.add(_band(CX + 0.97 * a * _T21, y_hl - 3.0 + 6.0 * _T21**4, fringe), c_hair, active=bangs)
        for j in range(-3, 4):
            x0 = CX + a * j * 0.22
            P.add(_pts(x0 - 0.5 + 1j * (y_hl + 1.0), x0 + I.bangs_slant + 1j * (fringe[:, 10 + 3 * j : 11 + 3 * j] - 1.5)),
                  c_strand, 0.7, active=bangs)

    # ---- Wearing_Hat: beanie, cap or fedora
    hat = A["Wearing_Hat"]
    if on(hat):
        hc = HATS[U.hat_colour.astype(np.int64)[:, 0]]
        c_hat = P.colours(hc)
        brim_y = y_hl + 1.5
        hat_w = a + vol + 2.0
        top_y = CY - b - vol - 5.0
        beanie, cap, fedora = (on(hat & (U.hat_style == k)) for k in range(3))
        if beanie:
            P.add(CX + hat_w * _UPPER.real + 1j * (brim_y + (brim_y - top_y) * _UPPER.imag), c_hat, active=beanie)
            P.add(_pts(CX - hat_w - 0.5 + 1j * (brim_y - 6), CX + hat_w + 0.5 + 1j * (brim_y - 6),
                       CX + hat_w + 0.5 + 1j * (brim_y + 0.5), CX - hat_w - 0.5 + 1j * (brim_y + 0.5)),
                  P.colours(hc * 0.8), active=beanie)
        if cap:
            P.add(CX + hat_w * _UPPER.real + 1j * (brim_y + (brim_y - top_y + 2) * _UPPER.imag), c_hat, active=cap)
            P.add(_ellipse(CX + 1j * (brim_y + 0.5), a * 0.95, 4.2, 24), P.colours(hc * 0.72), active=cap)
        if fedora:
            P.add(_pts(CX - a * 0.82 + 1j * brim_y, CX - a * 0.72 + 1j * (top_y - 2), CX + 1j * top_y,
                       CX + a * 0.72 + 1j * (top_y - 2), CX + a * 0.82 + 1j * brim_y), c_hat, active=fedora)
            P.add(_pts(CX - a * 0.8 + 1j * (brim_y - 5), CX + a * 0.8 + 1j * (brim_y - 5),
                       CX + a * 0.8 + 1j * (brim_y - 2), CX - a * 0.8 + 1j * (brim_y - 2)),
                  P.colours(hc * 0.55), active=fedora)
            P.add(_ellipse(CX + 1j * brim_y, hat_w + 8.0, 3.6, 32), P.colours(hc * 0.85), active=fedora)

    # ---- Eyeglasses: lenses, frames, temples, bridge
    glasses = on(A["Eyeglasses"])
    if glasses:
        c_frame = P.colours(FRAMES[I.glasses_colour.astype(np.int64)[:, 0]])
        fw = I.glasses_frame
        rx, ry = ew + 3.0, eh + 3.4
        n_exp = 2.0 + 3.0 * I.glasses_shape
        hw_eye = _half_width(g, ey)
        for s in _SIDES:
            ex = CX + s * es + yaw
            lens = _superellipse(ex + 1j * (ey + 0.6), rx, ry, n_exp, 32)
            P.add(lens, (205, 225, 240, 41), active=glasses)
            P.add(np.concatenate((lens, lens[:, :1]), axis=1), c_frame, fw, active=glasses)
            P.add(_pts(ex + s * rx + 1j * (ey - 0.5), CX + s * (hw_eye - 0.3) + 1j * (ey - 1.0)), c_frame, fw * 0.8,
                  active=glasses)
        P.add(CX + yaw + (es - rx) * _T9[::2] + 1j * (ey - 0.6 - 0.8 * np.sin(np.linspace(0, math.pi, 5))), c_frame,
              fw * 0.8, active=glasses)
    return P, U


# ----------------------------------------------------------------------------- drawing


def _fast_draw_works() -> bool:
    """Whether PIL's drawing core can be called directly and draws what ImageDraw draws."""
    try:
        pts = [1.0, 1.0, 14.0, 3.0, 9.0, 13.0]
        ims = [Image.new("RGB", (16, 16), (9, 9, 9)) for _ in range(2)]
        for fast, im in zip((True, False), ims):
            for mode, fill in ((None, (200, 10, 30)), ("RGBA", (10, 200, 30, 100))):
                d = ImageDraw.Draw(im, mode)
                if fast:
                    d.draw.draw_polygon(pts, d.draw.draw_ink(fill), 1)
                    d.draw.draw_lines(pts, d.draw.draw_ink(fill), 2)
                else:
                    d.polygon(pts, fill=fill)
                    d.line(pts, fill=fill, width=2)
        return ims[0].tobytes() == ims[1].tobytes()
    except Exception:  # a Pillow without these internals: use the public API
        return False


_FAST_DRAW = _fast_draw_works()


class _Canvas:
    """Draws on one image; opaque fills skip PIL's per-pixel alpha blending (several times faster)."""

    def __init__(self, im: Image.Image):
        self.opaque = ImageDraw.Draw(im)
        self.blend = ImageDraw.Draw(im, "RGBA") if im.mode == "RGB" else self.opaque
        self.cores = (self.opaque.draw, self.blend.draw)
        self.inks: dict = {}

    def draw(self, xy: list[float], fill, width: int) -> None:
        if _FAST_DRAW:
            core = self.cores[len(fill) == 4]
            ink = self.inks.get(fill)
            if ink is None:
                ink = self.inks[fill] = core.draw_ink(fill)
            if width:
                core.draw_lines(xy, ink, width)
            else:
                core.draw_polygon(xy, ink, 1)
        else:
            d = self.blend if len(fill) == 4 else self.opaque
            if width:
                d.line(xy, fill=fill, width=width)
            else:
                d.polygon(xy, fill=fill)


def _posed(P: _Plan, U, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Canvas coordinates (N, 2T) float64 of every point, and each image's length scale."""
    rot = U.rotation
    m = k * ZOOM * U.scale * (np.cos(rot) + 1j * np.sin(rot))
    t = k * (PIVOT + U.shift_x + 1j * U.shift_y) - m * PIVOT
    Z = np.concatenate(P.points, axis=1) * m + t
    return Z.view(np.float64), np.abs(m)[:, 0]


@lru_cache(maxsize=4)
def _noise_texture(size: int) -> np.ndarray:
    # One fixed texture; each image reads it at its own offset (no random generator per image).
    return np.random.default_rng(20240611).standard_normal((3, size * 2, size * 2)).astype(np.float32)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return g[None, :], g[:, None].copy()


_SCRATCH = threading.local()


def _scratch(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Reused full-size buffers: fresh large allocations cost page faults on every image.
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    if size not in bufs:
        bufs[size] = (np.empty((3, size, size), np.float32), np.empty((3, size, size), np.float32))
    return bufs[size]


def _finish(im: Image.Image, U, i: int, size: int, out: np.ndarray) -> None:
    """Light, white balance and noise; writes (3, size, size) float32 in [0, 1] to ``out``."""
    factor, tmp = _scratch(size)
    gx, gy = _grid(size)
    ls, la = float(U.light_strength[i, 0]), float(U.light_angle[i, 0])
    shade = np.float32(U.ambient[i, 0]) + (np.float32(ls * math.cos(la)) * gx + np.float32(ls * math.sin(la)) * gy)
    np.multiply(shade, (U.tint[i].astype(np.float32) / np.float32(255.0))[:, None, None], out=factor)
    np.multiply(np.asarray(im).transpose(2, 0, 1), factor, out=out)
    ox, oy = int(U.noise_x[i, 0]) * size // 128, int(U.noise_y[i, 0]) * size // 128
    np.multiply(_noise_texture(size)[:, oy : oy + size, ox : ox + size], np.float32(U.noise[i, 0]), out=tmp)
    out += tmp
    np.clip(out, 0.0, 1.0, out=out)


def render_scenes(
    scenes: Sequence[SceneParams], size: int = 128, supersample: int = 2, out: np.ndarray | None = None
) -> np.ndarray:
    """Render scenes into a float32 array (N, 3, size, size) with values in [0, 1].

    ``out``, if given, is a C-contiguous float32 array of that shape (e.g. the numpy
    view of a torch batch) and is filled and returned. A scene renders to the same
    pixels alone or in any batch.
    """
    n = len(scenes)
    if out is None:
        out = np.empty((n, 3, size, size), np.float32)
    if n == 0:
        return out
    P, U = _plan(scenes)
    canvas = size * supersample
    flat, scale = _posed(P, U, canvas / 128.0)
    bg = _clip(np.rint(U.background), 0.0, 255.0).astype(np.int64).tolist()
    offsets = np.cumsum([0] + [2 * layer[0] for layer in P.layers]).tolist()
    for i in range(n):
        xy = flat[i].tolist()
        im = Image.new("RGB", (canvas, canvas), tuple(bg[i]))
        cv = _Canvas(im)
        k = scale[i]
        for (npts, colour, width, active), o in zip(P.layers, offsets):
            if active is not None and not active[i]:
                continue
            fill = colour if type(colour) is tuple else colour[i]
            if width:
                w = width if type(width) is float else width[i]
                width = max(1, int(w * k + 0.5))
            cv.draw(xy[o : o + 2 * npts], fill, width)
        if supersample > 1:
            im = im.reduce(supersample)
        _finish(im, U, i, size, out[i])
    return out


def render(
    identity: Identity,
    attributes: Mapping[str, int] | Sequence[int] | np.ndarray,
    nuisance: Nuisance,
    size: int = 128,
    supersample: int = 2,
) -> np.ndarray:
    """Render one face: float32 array (size, size, 3) with values in [0, 1].

    ``attributes``: a {name: 0/1} mapping (missing names are 0) or 14 values in
    :data:`spec.ATTRIBUTES` order.
    """
    scene = SceneParams(identity, attribute_tuple(attributes), nuisance)
    return render_scenes([scene], size, supersample)[0].transpose(1, 2, 0).copy()


def region_masks(scene: SceneParams, size: int = 128) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks of where face parts are in the rendered image.

    ``cheeks``: the Rosy_Cheeks patches (whether drawn or not); ``mouth``: lips, teeth
    and smile corners in every Smiling/Mouth_Slightly_Open state; ``eyes``: both eyes
    with their lids; ``face``: the face outline. A pixel is in a mask if the region
    covers any part of it. Used to check that a localized attribute (or a
    counterfactual) changes only its own region.
    """
    I, U, A = _gather([scene])
    g = _layout(I, A, U)
    shapes = {
        "cheeks": [_ellipse(c, CHEEK_RX + 0.75, CHEEK_RY + 0.75, 24) for c in g.cheeks],
        "mouth": [_superellipse(g.mx + 1j * (g.my + 2.8), g.mw * 1.32 + 1.5, 9.8, 10.0, 32)],
        "eyes": [_ellipse(CX + s * g.es + g.yaw + 1j * g.ey, g.ew + 3.5, g.eh + 4.5, 24) for s in _SIDES],
        "face": [_face_outline(g)],
    }
    masks = {}
    for name in REGIONS:
        P = _Plan(1)
        for z in shapes[name]:
            P.add(z, (255,))
        flat, _ = _posed(P, U, 2 * size / 128.0)
        im = Image.new("L", (2 * size, 2 * size), 0)
        cv = _Canvas(im)
        xy, o = flat[0].tolist(), 0
        for npts, colour, _, _ in P.layers:
            cv.draw(xy[o : o + 2 * npts], colour, 0)
            o += 2 * npts
        masks[name] = np.asarray(im.reduce(2)) > 0
    return masks


__all__ = ["Identity", "Nuisance", "REGIONS", "SceneParams", "region_masks", "render", "render_scenes"]
