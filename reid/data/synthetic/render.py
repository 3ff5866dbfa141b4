"""Synthetic pedestrians in the exact Market-1501 layout and file naming.

Real Market-1501 cannot be shipped, so the demo, the tests and the benchmarks run on people drawn
here. **Identity** fixes what a re-ID model must learn: body proportions, skin, hair colour and
length, upper-body colour and pattern (solid, stripes, checks, front logo), sleeves, lower-body
garment (trousers, shorts, skirt) and colour, shoes, bag (backpack, hand bag, shoulder bag) and
hat. **Camera and frame** add what it must ignore: a per-camera colour cast and brightness,
per-camera background clutter, viewpoint (front/back/side: a logo is only seen from the front, a
backpack mostly from the back), scale and crop jitter, blur, sensor noise, partial occlusion.
Colours come from small shared palettes, so many identities share colours and a colour histogram
is not enough to tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SKIN = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]


HAIR = [(20, 20, 20), (60, 40, 20), (110, 75, 40), (200, 170, 90), (130, 130, 130), (150, 40, 30)]


CLOTH = [
    (200, 30, 30),
    (30, 60, 170),
    (240, 240, 240),
    (25, 25, 25),
    (40, 140, 60),
    (230, 200, 40),
    (120, 120, 120),
    (130, 70, 160),
    (240, 130, 40),
    (90, 170, 220),
    (150, 100, 60),
    (240, 150, 180),
]


LOWER = [
    (30, 30, 40),
    (40, 60, 120),
    (110, 110, 110),
    (160, 140, 100),
    (230, 230, 230),
    (80, 50, 30),
    (30, 80, 50),
    (150, 30, 40),
]


SHOES = [(20, 20, 20), (240, 240, 240), (120, 70, 40), (200, 40, 40)]


PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")


GARMENTS = ("trousers", "trousers", "shorts", "skirt")


BAGS = ("none", "none", "backpack", "handbag", "shoulder")


VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Identity:
    height: float
    width: float
    skin: tuple
    hair: tuple
    long_hair: bool
    upper: tuple
    upper2: tuple
    pattern: str
    long_sleeves: bool
    garment: str
    lower: tuple
    shoes: tuple
    bag: str
    bag_color: tuple
    hat: tuple | None


@dataclass(frozen=True)
class Camera:
    gain: np.ndarray
    brightness: float
    background: tuple
    clutter: tuple
    blur: float
    noise: float


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_identity(rng: np.random.Generator) -> Identity:
    upper = _pick(rng, CLOTH)
    return Identity(
        height=float(rng.uniform(0.82, 0.97)),
        width=float(rng.uniform(0.32, 0.46)),
        skin=_pick(rng, SKIN),
        hair=_pick(rng, HAIR),
        long_hair=bool(rng.random() < 0.35),
        upper=upper,
        upper2=_pick(rng, [c for c in CLOTH if c != upper]),
        pattern=_pick(rng, PATTERNS),
        long_sleeves=bool(rng.random() < 0.6),
        garment=_pick(rng, GARMENTS),
        lower=_pick(rng, LOWER),
        shoes=_pick(rng, SHOES),
        bag=_pick(rng, BAGS),
        bag_color=_pick(rng, LOWER + CLOTH[:4]),
        hat=_pick(rng, CLOTH) if rng.random() < 0.15 else None,
    )


def sample_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        gain=rng.uniform(0.7, 1.3, size=3),
        brightness=float(rng.uniform(-35, 25)),
        background=tuple(int(v) for v in rng.integers(60, 200, size=3)),
        clutter=tuple(tuple(int(v) for v in rng.integers(0, 255, size=3)) for _ in range(4)),
        blur=float(rng.uniform(0.0, 1.3)),
        noise=float(rng.uniform(2, 9)),
    )


def _shade(color, factor):
    return tuple(int(max(0, min(255, c * factor))) for c in color)


def _fill_pattern(draw: ImageDraw.ImageDraw, box, ident: Identity, view: str) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=ident.upper)
    step = max(2, int((y1 - y0) / 6))
    if ident.pattern == "hstripes":
        for y in range(int(y0), int(y1), 2 * step):
            draw.rectangle((x0, y, x1, min(y1, y + step - 1)), fill=ident.upper2)
    elif ident.pattern == "vstripes":
        for x in range(int(x0), int(x1), 2 * step):
            draw.rectangle((x, y0, min(x1, x + step - 1), y1), fill=ident.upper2)
    elif ident.pattern == "checks":
        for i, y in enumerate(range(int(y0), int(y1), step)):
            for j, x in enumerate(range(int(x0), int(x1), step)):
                if (i + j) % 2:
                    draw.rectangle(
                        (x, y, min(x1, x + step - 1), min(y1, y + step - 1)), fill=ident.upper2
                    )
    elif ident.pattern == "logo" and view == "front":
        cx, cy, r = (x0 + x1) / 2, y0 + (y1 - y0) * 0.4, (x1 - x0) * 0.22
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=ident.upper2)


def draw_person(
    draw: ImageDraw.ImageDraw, ident: Identity, view: str, cx: float, top: float, ph: float, rng
) -> None:
    """Draw one pedestrian of height ``ph`` pixels whose head starts at ``top``, centred on ``cx``."""
    side = view == "side"
    bw = ph * ident.width * (0.55 if side else 1.0) * 0.5  # torso width
    head_h, head_w = ph * 0.13, ph * 0.09
    y_neck, y_waist, y_knee, y_feet = top + head_h, top + ph * 0.5, top + ph * 0.72, top + ph * 0.94
    arm_w = max(2.0, bw * 0.22)
    leg_gap = (0.0 if side else bw * 0.08) + rng.uniform(0, bw * 0.15)
    # bag behind the body
    if ident.bag == "backpack" and view != "front":
        off = bw * 0.35 if side else 0
        draw.rectangle(
            (cx - bw * 0.45 - off, y_neck + ph * 0.04, cx + bw * 0.45 - off, y_waist - ph * 0.04),
            fill=ident.bag_color,
        )
    # legs / lower garment
    leg_w = bw * 0.42
    for sign in (0,) if side else (-1, 1):
        lx = cx + sign * (leg_gap / 2 + leg_w / 2)
        leg_colour = ident.lower if ident.garment == "trousers" else ident.skin
        draw.rectangle((lx - leg_w / 2, y_waist, lx + leg_w / 2, y_feet), fill=leg_colour)
        draw.rectangle(
            (lx - leg_w / 2 - 1, y_feet, lx + leg_w / 2 + (3 if side else 1), top + ph),
            fill=ident.shoes,
        )
    if ident.garment == "shorts":
        draw.rectangle(
            (cx - bw / 2, y_waist, cx + bw / 2, y_waist + (y_knee - y_waist) * 0.6),
            fill=ident.lower,
        )
    elif ident.garment == "skirt":
        draw.polygon(
            [
                (cx - bw / 2, y_waist),
                (cx + bw / 2, y_waist),
                (cx + bw * 0.75, y_knee),
                (cx - bw * 0.75, y_knee),
            ],
            fill=ident.lower,
        )
    # torso and arms
    _fill_pattern(
        draw, (cx - bw / 2, y_neck + ph * 0.02, cx + bw / 2, y_waist + ph * 0.02), ident, view
    )
    sleeve = ident.upper if ident.long_sleeves else ident.skin
    for sign in (1,) if side else (-1, 1):
        ax = cx + sign * (bw / 2 + arm_w / 2) if not side else cx + rng.uniform(-bw * 0.2, bw * 0.2)
        draw.rectangle(
            (ax - arm_w / 2, y_neck + ph * 0.03, ax + arm_w / 2, y_waist + ph * 0.04), fill=sleeve
        )
        if not ident.long_sleeves:
            draw.rectangle(
                (ax - arm_w / 2, y_neck + ph * 0.03, ax + arm_w / 2, y_neck + ph * 0.1),
                fill=ident.upper,
            )
    # bags in front
    if ident.bag == "handbag":
        hx = cx + (bw / 2 + arm_w) * (1 if view != "back" else -1)
        draw.rectangle(
            (hx - bw * 0.18, y_waist - ph * 0.02, hx + bw * 0.18, y_waist + ph * 0.1),
            fill=ident.bag_color,
        )
    elif ident.bag == "shoulder":
        draw.line(
            (cx - bw / 2, y_neck + ph * 0.03, cx + bw / 2, y_waist),
            fill=ident.bag_color,
            width=max(1, int(bw * 0.12)),
        )
        draw.rectangle(
            (cx + bw * 0.35, y_waist - ph * 0.06, cx + bw * 0.75, y_waist + ph * 0.04),
            fill=ident.bag_color,
        )
    elif ident.bag == "backpack" and view == "front":
        for sign in (-1, 1):
            draw.line(
                (
                    cx + sign * bw * 0.3,
                    y_neck + ph * 0.02,
                    cx + sign * bw * 0.3,
                    y_neck + ph * 0.18,
                ),
                fill=ident.bag_color,
                width=max(1, int(bw * 0.1)),
            )
    # head, hair, hat
    draw.ellipse(
        (cx - head_w / 2, top + head_h * 0.1, cx + head_w / 2, y_neck + 2), fill=ident.skin
    )
    if view == "back":
        draw.ellipse(
            (cx - head_w / 2, top + head_h * 0.05, cx + head_w / 2, y_neck), fill=ident.hair
        )
    else:
        draw.chord(
            (cx - head_w / 2, top, cx + head_w / 2, top + head_h * 0.9), 180, 360, fill=ident.hair
        )
    if ident.long_hair:
        draw.rectangle(
            (cx - head_w / 2, top + head_h * 0.3, cx + head_w / 2, y_neck + ph * 0.08),
            fill=ident.hair,
        )
        if view != "back":
            draw.ellipse(
                (cx - head_w * 0.35, top + head_h * 0.35, cx + head_w * 0.35, y_neck),
                fill=ident.skin,
            )
    if ident.hat is not None:
        draw.rectangle(
            (cx - head_w * 0.6, top - head_h * 0.05, cx + head_w * 0.6, top + head_h * 0.3),
            fill=ident.hat,
        )


def render(
    ident: Identity | None, camera: Camera, rng: np.random.Generator, size=(128, 64), kind="person"
) -> Image.Image:
    """Render one crop. ``kind``: person | distractor (background, bad crop) | junk (fragment)."""
    height, width = size
    image = Image.new("RGB", (width, height), _shade(camera.background, rng.uniform(0.85, 1.15)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):  # background clutter in the camera's palette
        colour = _shade(camera.clutter[int(rng.integers(4))], rng.uniform(0.6, 1.2))
        x0, y0 = rng.uniform(-10, width), rng.uniform(-10, height)
        draw.rectangle(
            (x0, y0, x0 + rng.uniform(4, width * 0.8), y0 + rng.uniform(3, height * 0.5)),
            fill=colour,
        )
    draw.rectangle(
        (0, height * rng.uniform(0.8, 0.92), width, height), fill=_shade(camera.background, 0.6)
    )
    if kind != "distractor" or rng.random() < 0.5:
        person = ident if ident is not None else sample_identity(rng)
        view = _pick(rng, VIEWS)
        scale = rng.uniform(0.85, 1.05) * (rng.uniform(1.3, 2.2) if kind != "person" else 1.0)
        ph = height * person.height * scale
        cx = width / 2 + rng.uniform(-5, 5) + (rng.uniform(-25, 25) if kind != "person" else 0)
        top = (
            (height - ph) / 2
            + rng.uniform(-6, 6)
            + (rng.uniform(-40, 10) if kind != "person" else 0)
        )
        draw_person(draw, person, view, cx, top, ph, rng)
    if kind == "person" and rng.random() < 0.25:  # partial occlusion: a passer-by, a pole, a car
        colour = tuple(int(v) for v in rng.integers(0, 255, size=3))
        if rng.random() < 0.5:
            y0 = height * rng.uniform(0.6, 0.85)
            draw.rectangle((0, y0, width, height), fill=colour)
        else:
            x0 = rng.choice([rng.uniform(-10, 5), rng.uniform(width * 0.65, width)])
            draw.rectangle((x0, 0, x0 + width * rng.uniform(0.15, 0.35), height), fill=colour)
    blur = camera.blur + rng.uniform(0, 0.6)
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    gain = camera.gain * rng.uniform(0.9, 1.1, size=3)
    pixels = pixels * gain + camera.brightness + rng.uniform(-12, 12)
    pixels += rng.normal(0.0, camera.noise, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
