"""Rendering of the synthetic dermoscopy-like lesions: class prototypes and pixels.

Split from :mod:`dermlit.data.synthetic` (which plans the dataset and writes it to disk);
rendering is vectorised numpy over coordinate grids, plus PIL for thin structures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermlit.constants import CLASSES

_AFFINE = Image.Transform.AFFINE

_N_ANGLES = 256
_EXTENT = 2.0  # lesion-coordinate half-width covered by the noise grids
_COARSE = 9  # smooth noise fields per lesion; fields _COARSE and _COARSE + 1 are fine noise
_PALETTE = {
    "light_brown": (0.74, 0.55, 0.40), "mid_brown": (0.56, 0.36, 0.24),
    "dark_brown": (0.34, 0.21, 0.14), "black": (0.13, 0.10, 0.10),
    "blue_grey": (0.45, 0.50, 0.60), "red": (0.80, 0.32, 0.34), "pink": (0.90, 0.62, 0.63),
    "purple": (0.50, 0.22, 0.42), "white": (0.94, 0.90, 0.88), "tan": (0.78, 0.64, 0.47),
    "dark_red": (0.55, 0.12, 0.18),
}  # fmt: skip
_PALETTE_NAMES = tuple(_PALETTE)
_PALETTE_RGB = np.array([_PALETTE[n] for n in _PALETTE_NAMES], dtype=np.float32)
_PARAMS = ("radius", "elong", "asym", "irreg", "soft", "opacity", "n_extra", "rim", "network",
           "net_irreg", "dots", "veil", "vessels", "ovoids", "scar", "scale", "erythema",
           "lobules", "fissures", "milia")  # fmt: skip
_DEFAULT_RANGES = {"radius": (0.35, 0.7), "elong": (1.0, 1.4), "asym": (0.03, 0.12),
                   "irreg": (0.01, 0.04), "soft": (0.05, 0.15), "opacity": (0.5, 0.85),
                   "n_extra": (0.0, 1.0), "rim": (-0.2, 0.2), "net_irreg": (0.0, 0.3)}  # fmt: skip


@dataclass(frozen=True)
class ClassPrototype:
    """Uniform ranges per shape/structure parameter (a structure is absent when its draw is
    <= 0, so a negative lower bound sets how often it appears), and palette weights."""

    ranges: Mapping[str, tuple[float, float]]
    base: Mapping[str, float]
    extra: Mapping[str, float]
    confusers: tuple[str, ...]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        lo_hi = np.array([self.ranges.get(p, _DEFAULT_RANGES.get(p, (0.0, 0.0))) for p in _PARAMS])
        return rng.uniform(lo_hi[:, 0], lo_hi[:, 1])

    def weights(self, which: str) -> np.ndarray:
        table = self.base if which == "base" else self.extra
        w = np.array([table.get(n, 0.0) for n in _PALETTE_NAMES])
        return w / w.sum()


PROTOTYPES: dict[str, ClassPrototype] = {
    "nv": ClassPrototype(
        {"radius": (0.3, 0.7), "elong": (1.0, 1.35), "asym": (0.0, 0.1), "irreg": (0.0, 0.03),
         "soft": (0.04, 0.14), "opacity": (0.5, 0.9), "n_extra": (0.0, 1.3), "rim": (-0.4, 0.1),
         "network": (-0.3, 0.9), "net_irreg": (0.0, 0.35), "dots": (-0.6, 0.5)},
        {"light_brown": 0.4, "mid_brown": 0.45, "dark_brown": 0.15},
        {"light_brown": 0.5, "mid_brown": 0.4, "dark_brown": 0.1}, ("mel", "bkl")),
    "mel": ClassPrototype(
        {"radius": (0.45, 0.9), "elong": (1.0, 1.6), "asym": (0.08, 0.28), "irreg": (0.025, 0.08),
         "soft": (0.03, 0.12), "opacity": (0.65, 0.95), "n_extra": (0.8, 3.0), "rim": (-0.3, 0.3),
         "network": (-0.4, 0.8), "net_irreg": (0.3, 1.0), "dots": (-0.2, 1.0), "veil": (-0.5, 0.8)},
        {"mid_brown": 0.35, "dark_brown": 0.45, "black": 0.2},
        {"black": 0.3, "blue_grey": 0.2, "dark_brown": 0.35, "light_brown": 0.1, "red": 0.05},
        ("nv", "bkl")),
    "bkl": ClassPrototype(
        {"radius": (0.4, 0.85), "elong": (1.0, 1.6), "asym": (0.05, 0.2), "irreg": (0.02, 0.06),
         "soft": (0.04, 0.16), "opacity": (0.35, 0.75), "n_extra": (0.0, 2.0),
         "fissures": (-0.2, 0.9), "milia": (-0.5, 0.8), "scale": (-0.5, 0.4),
         "network": (-0.6, 0.4)},
        {"tan": 0.5, "light_brown": 0.4, "mid_brown": 0.1},
        {"tan": 0.3, "mid_brown": 0.3, "light_brown": 0.2, "dark_brown": 0.1, "white": 0.1},
        ("akiec", "mel")),
    "akiec": ClassPrototype(
        {"radius": (0.4, 0.85), "elong": (1.0, 1.7), "asym": (0.05, 0.2), "irreg": (0.02, 0.06),
         "soft": (0.12, 0.35), "opacity": (0.3, 0.65), "n_extra": (0.0, 1.5), "scale": (0.0, 1.0),
         "erythema": (0.1, 0.8), "vessels": (-0.6, 0.3), "fissures": (-0.6, 0.3)},
        {"pink": 0.5, "red": 0.3, "tan": 0.2},
        {"red": 0.4, "white": 0.3, "pink": 0.2, "light_brown": 0.1}, ("bkl", "bcc")),
    "bcc": ClassPrototype(
        {"radius": (0.35, 0.8), "asym": (0.05, 0.2), "irreg": (0.02, 0.06), "soft": (0.06, 0.2),
         "opacity": (0.3, 0.7), "n_extra": (0.0, 1.5), "vessels": (-0.1, 1.0),
         "ovoids": (-0.3, 1.0), "erythema": (0.0, 0.4)},
        {"pink": 0.6, "white": 0.2, "light_brown": 0.2},
        {"blue_grey": 0.5, "pink": 0.3, "red": 0.2}, ("akiec", "nv")),
    "df": ClassPrototype(
        {"radius": (0.22, 0.45), "elong": (1.0, 1.3), "asym": (0.02, 0.1), "irreg": (0.01, 0.04),
         "soft": (0.08, 0.2), "opacity": (0.45, 0.8), "rim": (0.3, 0.9), "scar": (0.2, 1.0),
         "network": (-0.2, 0.6)},
        {"light_brown": 0.5, "mid_brown": 0.4, "tan": 0.1},
        {"light_brown": 0.5, "pink": 0.3, "mid_brown": 0.2}, ("nv", "bkl")),
    "vasc": ClassPrototype(
        {"radius": (0.2, 0.55), "elong": (1.0, 1.5), "asym": (0.03, 0.15), "irreg": (0.01, 0.05),
         "soft": (0.03, 0.1), "opacity": (0.6, 0.95), "n_extra": (0.0, 1.5), "lobules": (0.0, 1.0),
         "erythema": (0.0, 0.3)},
        {"red": 0.45, "purple": 0.4, "dark_red": 0.15},
        {"purple": 0.4, "blue_grey": 0.2, "red": 0.3, "black": 0.1}, ("bcc", "mel")),
}  # fmt: skip


@dataclass(frozen=True)
class Lesion:
    """Everything fixed for one lesion; each image of it adds only a small change of view."""

    dx: str
    params: dict[str, float]
    skin: np.ndarray  # (3,) skin tone of the patient
    base: np.ndarray  # (3,) main lesion colour
    extras: np.ndarray  # (k, 3) secondary colours, one per noise-field zone
    radius_table: np.ndarray  # (_N_ANGLES,) border radius by angle (1 = mean radius)
    centre: np.ndarray  # (2,) in units of half the image height
    rotation: float
    fields: tuple[Image.Image, ...]  # noise over lesion coords: _COARSE smooth, then 2 fine
    dots: np.ndarray  # (n, 3) u, v, radius in px of a 96 px high image
    milia: np.ndarray  # (n, 3)
    ovoids: np.ndarray  # (n, 4) u, v, radius u, radius v (lesion units)
    lobules: np.ndarray  # (n, 3) u, v, radius (lesion units)
    vessels: tuple[tuple[np.ndarray, int], ...]  # polylines in lesion units, px width at 96 px


def sample_lesion(dx: str, rng: np.random.Generator) -> Lesion:
    """Draw one lesion of class `dx`, mixed with one of its confuser classes."""
    if dx not in PROTOTYPES:
        raise ValueError(f"unknown diagnosis {dx!r}; expected one of {CLASSES}")
    own = PROTOTYPES[dx]
    conf = PROTOTYPES[own.confusers[rng.integers(len(own.confusers))]]
    w = 0.6 * rng.beta(1.3, 2.2)  # mostly typical, sometimes half-way to the confuser
    values = (1 - w) * own.draw(rng) + w * conf.draw(rng)
    p = dict(zip(_PARAMS, values.tolist(), strict=True))
    mix = lambda which: (1 - w) * own.weights(which) + w * conf.weights(which)  # noqa: E731
    base = _PALETTE_RGB[rng.choice(len(_PALETTE_RGB), p=mix("base"))] + rng.normal(0, 0.035, 3)
    n_extra = int(round(max(p["n_extra"], 0.0)))
    extras = _PALETTE_RGB[rng.choice(len(_PALETTE_RGB), size=n_extra, p=mix("extra"))]
    extras = extras + rng.normal(0, 0.03, (n_extra, 3))
    angles = np.linspace(-np.pi, np.pi, _N_ANGLES, endpoint=False)
    radius = np.ones(_N_ANGLES)
    for k in range(1, 15):  # low harmonics: asymmetry; high harmonics: border irregularity
        amp = p["asym"] if k <= 3 else p["irreg"] / math.sqrt(k)
        radius += amp * rng.normal() * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    tone = rng.beta(2.0, 3.0)
    skin = (1 - tone) * np.array([0.94, 0.78, 0.74]) + tone * np.array([0.74, 0.55, 0.45])

    def in_disc(n: int, r_max: float) -> np.ndarray:
        r, a = r_max * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    n_dots = int(round(max(p["dots"], 0) * 18))
    n_milia = int(round(max(p["milia"], 0) * 6))
    n_ovoids = int(round(1 + 4 * p["ovoids"])) if p["ovoids"] > 0 else 0
    n_lob = int(rng.integers(3, 8)) if p["lobules"] > 0 else 0
    return Lesion(
        dx=dx, params=p, skin=skin.astype(np.float32), base=base.astype(np.float32),
        extras=extras.astype(np.float32), radius_table=radius.clip(0.35).astype(np.float32),
        centre=np.clip(rng.normal(0, 0.12, 2), -0.35, 0.35), rotation=rng.uniform(0, 2 * np.pi),
        fields=_noise_fields(rng),
        dots=np.column_stack([in_disc(n_dots, 0.95), rng.uniform(0.5, 1.6, n_dots)]),
        milia=np.column_stack([in_disc(n_milia, 0.8), rng.uniform(0.6, 1.2, n_milia)]),
        ovoids=np.column_stack([in_disc(n_ovoids, 0.7), rng.uniform(0.08, 0.22, (n_ovoids, 2))]),
        lobules=np.column_stack([in_disc(n_lob, 0.6), rng.uniform(0.25, 0.5, n_lob)]),
        vessels=_vessel_tree(rng, p["vessels"]),
    )  # fmt: skip


def _noise_fields(rng: np.random.Generator) -> tuple[Image.Image, ...]:
    """_COARSE smooth fields (8x8 normals, bicubic-upsampled) then 2 fine ones, as PIL images."""
    smooth = [rng.standard_normal((8, 8), dtype=np.float32) for _ in range(_COARSE)]
    fine = [rng.standard_normal((40, 40), dtype=np.float32) for _ in range(2)]
    big = [Image.fromarray(f).resize((48, 48), Image.Resampling.BICUBIC) for f in smooth]
    return (*big, *(Image.fromarray(f) for f in fine))


def _vessel_tree(rng: np.random.Generator, strength: float) -> tuple[tuple[np.ndarray, int], ...]:
    """Arborizing vessels: random walks that branch and thin out."""
    if strength <= 0:
        return ()
    n_trees = int(rng.integers(1, 4))
    stack = [(rng.uniform(-0.5, 0.5, 2), rng.uniform(0, 2 * np.pi), 2, 0) for _ in range(n_trees)]
    lines = []
    while stack:
        start, heading, width, depth = stack.pop()
        pts = [start]
        for _ in range(int(rng.integers(2, 5))):
            heading += rng.normal(0, 0.45)
            step = rng.uniform(0.1, 0.22)
            pts.append(pts[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
            if depth < 3 and rng.uniform() < 0.35:
                turn = rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
                stack.append((pts[-1], heading + turn, max(width - 1, 1), depth + 1))
        lines.append((np.array(pts), width))
    return tuple(lines)


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of half the image height, origin at the centre."""
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / (height / 2)
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / (height / 2)
    return np.broadcast_to(x, (height, width)), np.broadcast_to(y[:, None], (height, width))


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Fields:
    """Lazily resample a lesion's noise fields (spanning [-_EXTENT, _EXTENT]^2 in lesion units)
    onto the image: only the fields a lesion's structures use cost time. PIL's C affine warp
    is ~10x faster than a numpy gather."""

    def __init__(self, fields, affine: np.ndarray, width: int, height: int):
        self.fields, self.size, self.cache = fields, (width, height), {}
        self.pixels_to_lesion = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self.cache:
            k = self.fields[i].width / (2 * _EXTENT)
            to_grid = np.array([[k, 0, k * _EXTENT], [0, k, k * _EXTENT]]) @ self.pixels_to_lesion
            data = tuple(to_grid.ravel().tolist())
            warped = self.fields[i].transform(self.size, _AFFINE, data, Image.Resampling.BILINEAR)
            self.cache[i] = np.asarray(warped, dtype=np.float32)
        return self.cache[i]


def _lerp(img: np.ndarray, colour, weight: np.ndarray) -> np.ndarray:
    return img + (np.asarray(colour, dtype=np.float32) - img) * weight[..., None]


def render_lesion(
    lesion: Lesion, rng: np.random.Generator, width: int = 128, height: int = 96
) -> np.ndarray:
    """Render one view (uint8, H x W x 3); `rng` draws the view: rotation, scale, shift,
    lighting, vignette and hair, like HAM10000's repeat images of a lesion."""
    p, (gx, gy), half = lesion.params, _grid(width, height), height / 2
    px = height / 96  # sizes in pixels are given for a 96 px high image
    rot = lesion.rotation + rng.normal(0, 0.15)
    scale = p["radius"] * rng.uniform(0.9, 1.12)
    cx, cy = (lesion.centre + rng.normal(0, 0.05, 2)).tolist()  # floats keep arrays float32
    e, c, s = math.sqrt(p["elong"]), math.cos(rot), math.sin(rot)
    dx, dy = gx - cx, gy - cy
    u, v = (dx * c + dy * s) / (scale * e), (dy * c - dx * s) * e / scale
    phi_idx = ((np.arctan2(v, u) + np.pi) * (_N_ANGLES / (2 * np.pi))).astype(np.intp)
    d = np.hypot(u, v) / lesion.radius_table[phi_idx % _N_ANGLES]
    mask = _smooth((1 - d) / (2 * p["soft"]) + 0.5)
    # lesion units -> pixels, the inverse of the (u, v) map above; used for fields and stamps
    a, b = half * scale * e, half * scale / e
    affine = np.array(
        [[a * c, -b * s, width / 2 + cx * half], [a * s, b * c, height / 2 + cy * half]]
    )
    noise = _Fields(lesion.fields, affine, width, height)

    col = np.broadcast_to(lesion.base, (height, width, 3)).astype(np.float32)
    for j, extra in enumerate(lesion.extras):
        col = _lerp(col, extra, 0.85 * _smooth((noise[j] - 0.2) * 1.2))
    shade = 1 - p["rim"] * 0.5 * (np.minimum(d, 1.2) - 0.5) + 0.1 * noise[8]
    col = col * (shade + 0.04 * noise[_COARSE])[..., None]
    f = 2 * np.pi * scale * 48 / 4.0  # a period of 4 px at 96 px height, whatever the size
    if p["network"] > 0:  # honeycomb lines, phase-jittered where the network is atypical
        j1, j2 = p["net_irreg"] * 2.5 * noise[3], p["net_irreg"] * 2.5 * noise[4]
        hv, hu = 0.866 * v, -0.5 * u  # three directions 120 degrees apart
        net = np.cos(f * u + j1) + np.cos(f * (hu + hv) + j2) + np.cos(f * (hu - hv) - j1)
        lines = _smooth((0.2 + p["net_irreg"] * 0.6 * noise[5] - net) * 1.2)
        fade = _smooth((1.05 - d) / 0.35)
        col = col * (1 - 0.25 * min(p["network"], 1) * lines * fade)[..., None]
    if p["veil"] > 0:
        col = _lerp(col, (0.6, 0.66, 0.78), 0.7 * min(p["veil"], 1) * _smooth(noise[6] * 2))
    if p["fissures"] > 0:
        ridge = np.sin(f * 0.5 * (u * 0.6 + v * 0.8) + 3.0 * noise[7])
        col = (
            col * (1 - 0.3 * min(p["fissures"], 1) * _smooth((0.3 - np.abs(ridge)) * 4))[..., None]
        )
    if p["scale"] > 0:
        col = col * (1 + 0.2 * p["scale"] * noise[_COARSE][..., None])
        col = _lerp(
            col, (0.95, 0.92, 0.85), 0.8 * min(p["scale"], 1) * _smooth(noise[_COARSE + 1] - 0.8)
        )
    if p["scar"] > 0:
        scar = _smooth((0.45 - d + 0.12 * noise[2]) / 0.12)
        col = _lerp(col, (0.95, 0.88, 0.86), min(p["scar"], 1) * scar)

    skin = _skin(lesion.skin, rng, width, height)
    if p["erythema"] > 0:
        halo = np.exp(-(((d - 1.0) / 0.45) ** 2)) * (0.6 + 0.4 * _smooth(noise[1]))
        skin = _lerp(skin, (0.88, 0.45, 0.46), 0.5 * min(p["erythema"], 1) * halo)
    img = skin + (col - skin) * (mask * p["opacity"])[..., None]
    if len(lesion.lobules):  # lacunae separated by pale septa
        lu, lv, lr = lesion.lobules.T[:, :, None, None].astype(np.float32)
        inside = _smooth((lr - np.hypot(u - lu, v - lv)) / 0.1).max(axis=0)
        img = _lerp(img, (0.93, 0.76, 0.76), 0.7 * min(p["lobules"], 1) * mask * (1 - inside))

    def stamp_dots(table: np.ndarray, radius_px: np.ndarray, blur: float = 0.6) -> np.ndarray:
        xy = table[:, :2] @ affine[:, :2].T + affine[:, 2]
        return _stamp(width, height, dots=np.column_stack([xy, radius_px]).tolist(), blur=blur * px)

    if len(lesion.dots):
        img = _lerp(
            img, (0.18, 0.11, 0.09), 0.9 * mask * stamp_dots(lesion.dots, lesion.dots[:, 2] * px)
        )
    if len(lesion.milia):
        layer = stamp_dots(lesion.milia, lesion.milia[:, 2] * px)
        img = _lerp(img, (0.97, 0.95, 0.86), 0.8 * layer * mask)
    if len(lesion.ovoids):
        layer = stamp_dots(lesion.ovoids, lesion.ovoids[:, 2:].mean(1) * scale * half, 1.2)
        img = _lerp(img, (0.38, 0.42, 0.52), 0.75 * min(p["ovoids"], 1) * layer * mask)
    if lesion.vessels:
        lines = [(pts @ affine[:, :2].T + affine[:, 2], wd * px) for pts, wd in lesion.vessels]
        layer = _stamp(width, height, lines=lines, blur=0.5 * px)
        img = _lerp(img, (0.72, 0.1, 0.14), min(p["vessels"], 1) * layer * mask)
    return _view(img, rng, gx, gy, width, height)


def _stamp(width: int, height: int, dots=(), lines=(), blur: float = 0.6) -> np.ndarray:
    """Thin structures drawn by PIL (anti-aliased by a small blur) as a [0, 1] weight map:
    `dots` are (x, y, radius) in pixels, `lines` (points (n, 2) in pixels, width)."""
    im = Image.new("L", (width, height))
    draw = ImageDraw.Draw(im)
    for x, y, r in dots:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    for pts, wd in lines:
        draw.line(
            [tuple(q) for q in pts.tolist()], fill=255, width=max(1, round(wd)), joint="curve"
        )
    return np.asarray(im.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255


def _upsampled_noise(rng: np.random.Generator, shape: tuple[int, int], width: int, height: int):
    small = Image.fromarray(rng.standard_normal(shape).astype(np.float32))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _skin(tone: np.ndarray, rng, width: int, height: int) -> np.ndarray:
    """Skin with blotchy low-frequency and fine texture; redrawn per view."""
    low = _upsampled_noise(rng, (3, 4), width, height)
    mid = _upsampled_noise(rng, (12, 16), width, height)
    shade = 1 + 0.04 * low + 0.025 * mid
    skin = tone * shade[..., None]
    skin[..., 1:] *= (1 - 0.025 * _upsampled_noise(rng, (4, 5), width, height))[..., None]
    return skin


def _view(img, rng, gx, gy, width, height) -> np.ndarray:
    """Lighting, hair, dermatoscope vignette, sensor noise, then quantise."""
    if rng.uniform() < 0.35:
        hairs = []
        for _ in range(int(rng.integers(1, 7))):
            start = rng.uniform([0, 0], [width, height])
            heading, pts = rng.uniform(0, 2 * np.pi), [start]
            for _ in range(6):
                heading += rng.normal(0, 0.15)
                pts.append(
                    pts[-1] + 0.08 * width * np.array([math.cos(heading), math.sin(heading)])
                )
            hairs.append((np.array(pts), height / 96))
        img = _lerp(
            img, (0.15, 0.12, 0.1), 0.7 * _stamp(width, height, lines=hairs, blur=height / 192)
        )
    cast = rng.normal(1.0, 0.03, 3).astype(np.float32)
    grad = 1 + rng.normal(0, 0.06) * gx + rng.normal(0, 0.06) * gy
    vx, vy = rng.normal(0, 0.1, 2).tolist()
    r = np.hypot(gx - vx, gy - vy)
    rv = rng.uniform(1.15, 1.6)
    light = rng.normal(1.0, 0.05) * grad * (1 - 0.15 * (r / rv) ** 2)
    vignette = _smooth((rv - r) / rng.uniform(0.06, 0.2))
    img = img * (light * vignette)[..., None] * cast + (0.06 * (1 - vignette))[..., None]
    img = img + 0.012 * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
