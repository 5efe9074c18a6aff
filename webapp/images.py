"""Product pictures drawn locally: the catalogue has no images, and the storefront must work
offline, so every product gets a deterministic SVG.

The root category picks the colour family, the leaf category one of a few silhouettes (so a
kettle looks like its neighbours on the shelf) and the product id the exact hue, the pattern and
its placement. Same input, same bytes: the image can be cached for ever.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

SIZE = 240
# (x, y) polygons / paths drawn in a 100x100 box, scaled into the picture.
SHAPES = (
    '<rect x="22" y="30" width="56" height="52" rx="8"/>',  # box
    '<circle cx="50" cy="54" r="28"/>',  # round
    '<path d="M40 18h20v14l8 10v40a6 6 0 0 1-6 6H38a6 6 0 0 1-6-6V42l8-10z"/>',  # bottle
    '<path d="M50 18 82 80H18z"/>',  # cone
    '<path d="M20 44h60l-6 38H26z M32 44a18 18 0 0 1 36 0" />',  # bag / pot
    '<rect x="16" y="40" width="68" height="30" rx="15"/>',  # bar
)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def product_svg(product_id: str, category_path: list[str] | tuple[str, ...], label: str) -> str:
    """A 240x240 SVG for the product; ``label`` (e.g. the leaf category's name) is drawn as text
    and escaped."""
    root = category_path[0] if category_path else ""
    leaf = category_path[-1] if category_path else ""
    root_hue = _digest(f"root:{root}")[0] * 360 // 256
    item = _digest(f"product:{product_id}")
    hue = (root_hue + item[0] % 40 - 20) % 360
    shape = SHAPES[_digest(f"leaf:{leaf}")[0] % len(SHAPES)]
    dots = "".join(
        f'<circle cx="{x % 100}" cy="{y % 100}" r="{2 + r % 5}"/>'
        for x, y, r in zip(item[1:13:2], item[2:13:2], item[13:19], strict=True)
    )
    tilt = item[20] % 21 - 10
    text = escape(label[:24])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
        f'viewBox="0 0 100 100" role="img" aria-label="{escape(label, {chr(34): "&quot;"})}">'
        f'<rect width="100" height="100" fill="hsl({hue},45%,92%)"/>'
        f'<g fill="hsl({hue},40%,80%)">{dots}</g>'
        f'<g fill="hsl({hue},55%,42%)" transform="rotate({tilt} 50 54)">{shape}</g>'
        f'<text x="50" y="96" font-family="sans-serif" font-size="7" text-anchor="middle" '
        f'fill="hsl({hue},35%,25%)">{text}</text></svg>'
    )
