"""SynthWebAction: procedural VisualWebArena-like next-action prediction (SPEC §2.7).

A small shopping site (store name, category nav, search box, cart; products with brand, model,
price, rating) is rendered as a 1280×1440 browser viewport. Every interactive element that is
fully visible gets a set-of-marks annotation like VisualWebArena's SoM screenshots: its box
outlined in a colour and a tag with its unique id (1–999, increasing in reading order) in that
colour at its top-left (left of it where there is no room above). The user text is
"<image>OBJECTIVE: …", a newline, "PREVIOUS ACTIONS:", then one action per line naming elements by
their text (`type [search box] [wireless mouse]`, `click [Logitech M185 Wireless Mouse]`) or
"None". Pages taller than the viewport are scrolled like a browser (SCROLL_STEP px per
`scroll [down]`, stopping at the page end); elements cut by the viewport are not marked.

Page kinds and their ground truth (one rule each, so the right action is unambiguous):
- search   (home page, no previous action)              → `type [search box id] [query]`
- listed   (results page showing the objective's item)  → `click [id of the item's name link]`
- more     (results page without it, list continues
            below the fold: "Items 1-12 of 37", a cut
            card at the bottom)                         → `scroll [down]`
- price    (the item's page, price question)            → `stop [$13.49]` (price as printed)
- cart     (the item's page, "add to cart" objective)   → `click [Add to Cart button id]`
- other    (another item's page, either objective)      → `go_back`
Result cards show no price, so a price question on a results page can only be answered by opening
the item (otherwise `stop` would be as right as `click`). The query typed on the search page is the
item's product type in lower case ("wireless mouse"); every result is of that type.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vigorl_env.data.base import Sample, SceneObject
from vigorl_env.data.synth import ui
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.data.synth.ui import Box, Ellipse, Glyph, Line, Op, Page, Rect, Text, Theme

W, H = 1280, 1440
MIN_MARKS, MAX_MARKS = 8, 30
PAGE_KINDS: tuple[str, ...] = ("search", "listed", "more", "price", "cart", "other")
SCROLL_STEP = 1200
MAX_ATTEMPTS = 64
#: Set-of-marks colours (matplotlib tab10 without its light grey), as in VWA screenshots.
SOM_COLORS: tuple[ui.RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

# --------------------------------------------------------------------------------------------
# The shop world
# --------------------------------------------------------------------------------------------

# fmt: off
STORE_NAMES: tuple[str, ...] = (
    "One Stop Market", "ShopMart", "CartNest", "Brightway Store", "Urban Basket",
    "Pinecrest Goods", "Daily Deals", "MarketHub",
)
# fmt: on


@dataclass(frozen=True)
class _Kind:
    """A product type: what a query finds (brands × variants give distinct products)."""

    noun: str
    brands: tuple[str, ...]
    variants: tuple[str, ...]
    lo: int  # price range in dollars
    hi: int


# fmt: off
CATALOG: dict[str, tuple[_Kind, ...]] = {
    "Electronics": (
        _Kind("Wireless Mouse",
              ("Logitech", "Microsoft", "TECKNET", "Amazon Basics", "Razer", "HP"),
              ("M185", "Silent", "Ergonomic", "Compact", "2.4G", "Bluetooth", "Vertical"), 9, 59),
        _Kind("Bluetooth Speaker",
              ("JBL", "Anker", "Sony", "Bose", "Tribit", "Ultimate Ears"),
              ("Portable", "Waterproof", "Mini", "Flip 5", "SoundCore 2", "Outdoor"), 19, 199),
        _Kind("USB-C Charger",
              ("Anker", "Belkin", "UGREEN", "Spigen", "Aukey", "Baseus"),
              ("20W", "65W GaN", "Dual Port", "Fast", "Compact", "30W"), 12, 59),
        _Kind("Wireless Earbuds",
              ("Sony", "JLab", "Soundcore", "Skullcandy", "Samsung", "Jabra"),
              ("Go Air", "Noise Cancelling", "Sport", "Pro", "Life P2", "Active"), 19, 249),
        _Kind("HDMI Cable",
              ("Amazon Basics", "Belkin", "Cable Matters", "UGREEN", "Snowkids"),
              ("6 ft", "10 ft", "4K", "High Speed", "Braided", "8K"), 6, 29),
        _Kind("Mechanical Keyboard",
              ("Keychron", "Redragon", "Logitech", "Corsair", "RK Royal Kludge"),
              ("K2", "Tenkeyless", "RGB", "Wireless", "Low Profile", "60%"), 39, 179),
    ),
    "Home & Kitchen": (
        _Kind("Coffee Maker",
              ("Mr. Coffee", "Cuisinart", "Hamilton Beach", "Keurig", "BLACK+DECKER"),
              ("12-Cup", "Single Serve", "Programmable", "Drip", "Compact", "Thermal"), 25, 149),
        _Kind("French Press",
              ("Bodum", "Mueller", "Utopia Kitchen", "SterlingPro", "Secura"),
              ("34 oz", "Stainless Steel", "Glass", "Double Wall", "Chambord", "Travel"), 15, 45),
        _Kind("Chef's Knife",
              ("Victorinox", "Mercer", "Zwilling", "Wusthof", "Henckels"),
              ("8 Inch", "Fibrox Pro", "Classic", "Japanese Style", "Forged"), 19, 169),
        _Kind("Bath Towel Set",
              ("Utopia Towels", "Amazon Basics", "Chakir", "Lane Linen"),
              ("6-Piece", "Cotton", "Quick Dry", "Luxury", "Oversized"), 19, 79),
        _Kind("Water Bottle",
              ("Hydro Flask", "CamelBak", "Nalgene", "Owala", "Contigo"),
              ("32 oz", "Insulated", "Wide Mouth", "FreeSip", "Chute Mag", "24 oz"), 9, 49),
    ),
    "Beauty & Personal Care": (
        _Kind("Face Moisturizer",
              ("CeraVe", "Neutrogena", "Olay", "La Roche-Posay", "Cetaphil"),
              ("Daily", "Oil-Free", "SPF 30", "Hydrating", "Night", "Sensitive Skin"), 8, 39),
        _Kind("Electric Toothbrush",
              ("Oral-B", "Philips Sonicare", "Fairywill", "Aquasonic"),
              ("Pro 1000", "Rechargeable", "Sonic", "4100", "Travel"), 24, 129),
        _Kind("Hair Dryer",
              ("Revlon", "Conair", "Dyson", "BaBylissPRO", "Remington"),
              ("Ionic", "1875W", "Travel", "Ceramic", "Compact"), 19, 299),
        _Kind("Shampoo",
              ("Pantene", "Head & Shoulders", "OGX", "Dove", "Redken"),
              ("Daily Moisture", "Argan Oil", "Volume", "Repair", "Clarifying"), 5, 29),
    ),
    "Sports & Outdoors": (
        _Kind("Yoga Mat",
              ("Gaiam", "Manduka", "BalanceFrom", "Amazon Basics", "Liforme"),
              ("6mm", "Non Slip", "Extra Thick", "Travel", "Premium", "Eco"), 15, 89),
        _Kind("Resistance Bands",
              ("Fit Simplify", "TheraBand", "Whatafit", "Bodylastics"),
              ("Set of 5", "Loop", "Heavy", "Fabric", "Tube"), 8, 39),
        _Kind("Camping Lantern",
              ("Coleman", "LE", "Black Diamond", "Goal Zero", "Vont"),
              ("LED", "Rechargeable", "Collapsible", "Solar", "1000 Lumen"), 12, 69),
        _Kind("Hiking Backpack",
              ("Osprey", "Deuter", "TETON Sports", "Kelty", "REI Co-op"),
              ("40L", "Daypack", "Lightweight", "Waterproof", "22L"), 29, 199),
    ),
    "Office Products": (
        _Kind("Gel Pens",
              ("Pilot", "Pentel", "Zebra", "uni-ball", "BIC"),
              ("G2", "EnerGel", "Sarasa", "Signo", "Fine Point"), 5, 25),
        _Kind("Sticky Notes",
              ("Post-it", "Amazon Basics", "Mr. Pen", "Early Buy"),
              ("3x3 in", "Super Sticky", "Pastel", "Lined", "Neon"), 4, 19),
        _Kind("Desk Organizer",
              ("SimpleHouseware", "Marbrasse", "Mindspace", "EasyPAG"),
              ("Mesh", "Bamboo", "5-Tier", "Rotating", "Drawer"), 12, 45),
        _Kind("Spiral Notebook",
              ("Five Star", "Mead", "Oxford", "Moleskine", "Amazon Basics"),
              ("College Ruled", "3 Subject", "A5", "Dotted", "Hardcover"), 4, 24),
    ),
    "Grocery & Gourmet Food": (
        _Kind("Green Tea",
              ("Bigelow", "Twinings", "Yogi", "Lipton", "Harney & Sons"),
              ("Classic", "Matcha", "Jasmine", "Decaf", "Organic"), 4, 19),
        _Kind("Dark Chocolate",
              ("Lindt", "Ghirardelli", "Godiva", "Hu", "Green & Black's"),
              ("85% Cocoa", "Sea Salt", "Almond", "Excellence", "Intense"), 3, 25),
        _Kind("Ground Coffee",
              ("Peet's", "Lavazza", "Starbucks", "Dunkin'", "Death Wish"),
              ("Medium Roast", "Dark Roast", "Espresso", "Decaf", "Breakfast Blend"), 7, 24),
        _Kind("Olive Oil",
              ("California Olive Ranch", "Colavita", "Bertolli", "Kirkland"),
              ("Extra Virgin", "Light", "Organic", "Cold Pressed", "Mild"), 8, 39),
    ),
}
# fmt: on
# fmt: off
NAV_CATEGORIES: tuple[str, ...] = (
    "Beauty & Personal Care", "Sports & Outdoors", "Clothing, Shoes & Jewelry", "Home & Kitchen",
    "Office Products", "Tools & Home Improvement", "Health & Household", "Patio, Lawn & Garden",
    "Electronics", "Cell Phones & Accessories", "Video Games", "Grocery & Gourmet Food",
)
# fmt: on
#: Name suffixes: colours for goods, pack sizes for consumables.
SUFFIXES: tuple[str, ...] = ("", "", "", ", Black", ", White", " (2 Pack)", ", Gray", ", Blue")
CONSUMABLE_SUFFIXES: tuple[str, ...] = (
    "",
    "",
    "",
    ", Pack of 3",
    " (2 Pack)",
    ", 16 oz",
    ", Family Size",
)
CONSUMABLES = frozenset(
    {"Face Moisturizer", "Shampoo", "Green Tea", "Dark Chocolate", "Ground Coffee", "Olive Oil"}
)
PRICE_CENTS: tuple[int, ...] = (99, 49, 95, 0, 29, 79, 89, 19, 59, 45)
PRICE_OBJECTIVES: tuple[str, ...] = (
    "What is the price of the {item}?",
    "Find the price of {item}.",
    "How much does the {item} cost?",
    "Tell me the price of {item} in this store.",
)
CART_OBJECTIVES: tuple[str, ...] = (
    "Add the {item} to my cart.",
    "Add {item} to the shopping cart.",
    "Put one {item} in my cart.",
    "Buy the {item}: add it to the cart.",
)
DESCRIPTION_SENTENCES: tuple[str, ...] = (
    "Designed for everyday use with durable, high-quality materials.",
    "Backed by a 1-year limited warranty and friendly customer support.",
    "Compact and lightweight, so it fits easily in a bag or drawer.",
    "Thousands of customers rate it as one of the best values in its class.",
    "Ships in recyclable packaging; some assembly may be required.",
    "Easy to clean and built to last through years of regular use.",
    "Please check the dimensions before ordering to make sure it fits your needs.",
    "Free returns within 30 days of delivery.",
)


@dataclass(frozen=True)
class _Product:
    name: str
    kind: _Kind
    category: str
    price: str
    rating: float
    reviews: int


def _products(
    rng: np.random.Generator, kind: _Kind, category: str, n: int, avoid: set[str]
) -> list[_Product]:
    """`n` distinct products of one type (names not in `avoid`), each with a distinct price."""
    out: list[_Product] = []
    names, prices = set(avoid), set()
    while len(out) < n:
        brand = kind.brands[int(rng.integers(len(kind.brands)))]
        variant = kind.variants[int(rng.integers(len(kind.variants)))]
        sfx = CONSUMABLE_SUFFIXES if kind.noun in CONSUMABLES else SUFFIXES
        name = f"{brand} {variant} {kind.noun}{sfx[int(rng.integers(len(sfx)))]}"
        dollars = int(rng.integers(kind.lo, kind.hi + 1))
        price = f"${dollars}.{PRICE_CENTS[int(rng.integers(len(PRICE_CENTS)))]:02d}"
        if name in names or price in prices:
            continue
        names.add(name)
        prices.add(price)
        out.append(
            _Product(
                name,
                kind,
                category,
                price,
                float(rng.integers(4, 11)) / 2,
                int(rng.integers(3, 2400)),
            )
        )
    return out


def _random_kind(rng: np.random.Generator, exclude: _Kind | None = None) -> tuple[_Kind, str]:
    cats = sorted(CATALOG)
    while True:
        cat = cats[int(rng.integers(len(cats)))]
        kind = CATALOG[cat][int(rng.integers(len(CATALOG[cat])))]
        if kind != exclude:
            return kind, cat


# --------------------------------------------------------------------------------------------
# The document (page coordinates, before scrolling into the viewport)
# --------------------------------------------------------------------------------------------


@dataclass
class _Mark:
    role: str
    text: str
    box: Box
    key: str = ""


@dataclass
class _Doc:
    rng: np.random.Generator
    theme: Theme
    link_color: ui.RGB
    ops: list[Op] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)
    height: int = H

    def link(
        self,
        x: int,
        cy: int,
        text: str,
        size: int = 14,
        bold: bool = False,
        color: ui.RGB | None = None,
        underline: bool = False,
        key: str = "",
    ) -> Box:
        ops, box = ui.link_ops(x, cy, text, size, color or self.link_color, underline, bold)
        self.ops.extend(ops)
        self.marks.append(_Mark("link", text, box, key))
        return box

    def button(self, box: Box, text: str, size: int = 15, key: str = "") -> None:
        self.ops.extend(ui.button_ops(box, text, size, "primary", self.theme, 3))
        self.marks.append(_Mark("button", text, box, key))


def _shop_theme(rng: np.random.Generator) -> Theme:
    accent = (
        (25, 121, 195),
        (242, 111, 33),
        (0, 128, 96),
        (112, 48, 160),
        (196, 30, 58),
        (20, 110, 190),
        (230, 120, 0),
    )[int(rng.integers(7))]
    return Theme(
        dark=False,
        bg=ui.WHITE,
        surface=ui.WHITE,
        surface_alt=(245, 245, 245),
        border=(204, 204, 204),
        text=(51, 51, 51),
        muted=(117, 117, 117),
        accent=accent,
        on_accent=ui.WHITE,
        topbar=ui.WHITE,
        on_topbar=(51, 51, 51),
        sidebar=(245, 245, 245),
        field=ui.WHITE,
        danger=(200, 30, 30),
    )


HEADER_H = 176


def _header(
    d: _Doc, store: str, query: str | None, n_strip: int, n_cats: int, cart_count: int
) -> None:
    """Store header (y 0..HEADER_H): account strip, logo, search box and button, cart, nav."""
    t = d.theme
    dark_strip = bool(d.rng.random() < 0.5)
    strip_bg = (51, 51, 51) if dark_strip else (240, 240, 240)
    strip_fg = (235, 235, 235) if dark_strip else (80, 80, 80)
    d.ops.append(Rect((0, 0, W - 1, 35), fill=strip_bg))
    d.ops.append(
        Text(
            (40, 18),
            f"Welcome to {store}!" if d.rng.random() < 0.5 else "Default welcome msg!",
            13,
            strip_fg,
            False,
            "lm",
        )
    )
    links = (
        "My Account",
        "My Wish List",
        "Sign Out" if d.rng.random() < 0.5 else "Sign In",
        "Create an Account",
    )[:n_strip]
    x = W - 40 - sum(ui.text_width(s, 13) for s in links) - 26 * max(0, len(links) - 1)
    for s in links:
        box = d.link(x, 18, s, 13, color=strip_fg)
        x = box[2] + 24
    # logo
    cy = 36 + 46
    d.ops.append(Glyph("cart", (40, cy - 22, 83, cy + 21), t.accent))
    lw = ui.text_width(store, 24, True)
    d.ops.append(Text((92, cy), store, 24, (40, 40, 40), True, "lm"))
    d.marks.append(_Mark("link", store, (38, cy - 24, 92 + lw + 2, cy + 23), "logo"))
    # search box + button
    sx1, sx2 = 560, 1060
    box = (sx1, cy - 20, sx2, cy + 20)
    text = query if query is not None else "Search entire store here..."
    d.ops.extend(ui.text_field_ops(box, text, 15, t, 2, placeholder=query is None))
    d.marks.append(_Mark("searchbox", text, box, "search_box"))
    bb = (sx2 + 6, cy - 20, sx2 + 46, cy + 20)
    d.ops.append(Rect(bb, fill=t.accent, radius=2))
    d.ops.append(Glyph("search", (bb[0] + 10, bb[1] + 10, bb[2] - 10, bb[3] - 10), ui.WHITE))
    d.marks.append(_Mark("button", "Search", bb, "search_button"))
    # cart
    cx = W - 120
    d.ops.append(Glyph("cart", (cx, cy - 16, cx + 31, cy + 15), (80, 80, 80)))
    d.ops.append(Ellipse((cx + 22, cy - 22, cx + 40, cy - 4), fill=t.accent))
    d.ops.append(Text((cx + 31, cy - 13), str(cart_count), 11, ui.WHITE, True, "mm"))
    d.ops.append(Text((cx + 46, cy), "My Cart", 14, (60, 60, 60), False, "lm"))
    d.marks.append(
        _Mark(
            "link",
            "My Cart",
            (cx - 2, cy - 24, cx + 48 + ui.text_width("My Cart", 14), cy + 18),
            "cart",
        )
    )
    # category navigation
    nav_bg = ui.mix(t.accent, ui.WHITE, 0.9) if d.rng.random() < 0.5 else (240, 240, 240)
    d.ops.append(Rect((0, 128, W - 1, HEADER_H - 1), fill=nav_bg))
    d.ops.append(Line((0, HEADER_H - 1, W - 1, HEADER_H - 1), (220, 220, 220), 1))
    order = d.rng.permutation(len(NAV_CATEGORIES))
    x = 40
    for i in order[:n_cats]:
        name = NAV_CATEGORIES[int(i)]
        if x + ui.text_width(name, 14, True) > W - 40:
            continue
        box = d.link(x, 152, name, 14, bold=True, color=(60, 60, 60), key=f"nav:{name}")
        x = box[2] + 30


def _nav_fit(rng: np.random.Generator, budget: int) -> tuple[int, int]:
    """Strip-link and nav-category counts that fit the element budget (header has 4 fixed marks)."""
    budget = max(0, budget - 4)
    n_strip = min(int(rng.integers(0, 4)), budget)
    n_cats = min(int(rng.integers(2, 8)), budget - n_strip)
    return n_strip, max(0, n_cats)


CARD_W, CARD_GAP, PIC_H, NAME_LH = 283, 24, 220, 20
CARD_BODY = 12 + 3 * NAME_LH + 8 + 18 + 8 + 22 + 20  # a card below its picture (3 name lines kept)
CARD_H = PIC_H + CARD_BODY
GRID_TOP = HEADER_H + 24 + 160  # results grid origin (below title and toolbar)


def _product_card(
    d: _Doc, x: int, y: int, w: int, p: _Product, show_price: bool, pic_h: int = PIC_H
) -> None:
    d.ops.append(ui.picture_op(d.rng, (x, y, x + w - 1, y + pic_h - 1)))
    d.ops.append(Rect((x, y, x + w - 1, y + pic_h - 1), outline=(230, 230, 230)))
    lines = ui.wrap(p.name, 15, w)[:3]
    ny = y + pic_h + 12
    x2 = x
    for i, s in enumerate(lines):
        d.ops.append(Text((x, ny + i * NAME_LH + NAME_LH // 2), s, 15, d.link_color, False, "lm"))
        x2 = max(x2, x + ui.text_width(s, 15))
    t0 = ui.text_bbox(lines[0], 15, False, "lm")
    t1 = ui.text_bbox(lines[-1], 15, False, "lm")
    box = (
        x - 2,
        ny + NAME_LH // 2 + t0[1] - 2,
        min(x2 + 1, x + w - 1),
        ny + (len(lines) - 1) * NAME_LH + NAME_LH // 2 + t1[3] + 2,
    )
    d.marks.append(_Mark("link", p.name, box, f"product:{p.name}"))
    sy = ny + len(lines) * NAME_LH + 8 + 9
    d.ops.extend(ui.stars_ops(x, sy, p.rating, 14, (255, 165, 0), (220, 220, 220)))
    d.ops.append(Text((x + 5 * 16 + 6, sy), f"{p.reviews} Reviews", 12, d.theme.muted, False, "lm"))
    py = sy + 9 + 8 + 11
    if show_price:
        d.ops.append(Text((x, py), p.price, 18, (30, 30, 30), True, "lm"))
    else:
        badge = ("In stock", "Free shipping", "Ships in 24h", "Top rated")[p.reviews % 4]
        d.ops.append(Text((x, py), badge, 13, (0, 128, 0), False, "lm"))


def _footer(d: _Doc, y: int) -> int:
    d.ops.append(Rect((0, y, W - 1, y + 220), fill=(242, 242, 242)))
    for k, s in enumerate(
        (
            "About us",
            "Customer Service",
            "Privacy and Cookie Policy",
            "Search Terms",
            "Advanced Search",
            "Orders and Returns",
            "Contact Us",
        )
    ):
        d.link(40 + (k // 4) * 300, y + 40 + (k % 4) * 36, s, 14, color=(60, 60, 60))
    d.ops.append(
        Text(
            (40, y + 196),
            "Copyright © 2013-present Magento, Inc. All rights reserved.",
            12,
            (120, 120, 120),
            False,
            "lm",
        )
    )
    return y + 220


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def _home_page(d: _Doc, rng: np.random.Generator, exclude: _Kind) -> None:
    t = d.theme
    y = HEADER_H + 24
    hero = (40, y, W - 41, y + 300)
    d.ops.append(ui.picture_op(rng, hero))
    d.ops.append(Rect((80, y + 60, 620, y + 240), fill=(255, 255, 255)))
    head = ("Summer Sale", "New Arrivals", "Back to School", "Holiday Deals", "Spring Savings")[
        int(rng.integers(5))
    ]
    d.ops.append(Text((110, y + 105), head, 34, (30, 30, 30), True, "lm"))
    d.ops.append(
        Text(
            (110, y + 148),
            f"Up to {int(rng.integers(2, 8)) * 10}% off selected items",
            17,
            (80, 80, 80),
            False,
            "lm",
        )
    )
    d.button(
        (110, y + 178, 110 + ui.button_width("Shop Now", 15, 22) - 1, y + 217),
        "Shop Now",
        key="hero",
    )
    y += 300 + 40
    d.ops.append(
        Text(
            (40, y),
            ("Hot Sellers", "Featured Products", "Recommended for you")[int(rng.integers(3))],
            24,
            (40, 40, 40),
            False,
            "la",
        )
    )
    d.ops.append(Line((40, y + 40, W - 41, y + 40), t.border, 1))
    y += 60
    ncols = 4
    cw = (W - 80 - (ncols - 1) * CARD_GAP) // ncols
    for r in range(2):
        for k in range(ncols):
            kind, cat = _random_kind(rng, exclude)
            p = _products(rng, kind, cat, 1, set())[0]
            _product_card(
                d, 40 + k * (cw + CARD_GAP), y + r * (CARD_H - 20 + 30), cw, p, True, PIC_H - 20
            )
    d.height = _footer(d, y + 2 * (CARD_H + 10) + 40)


def _results_layout(per_page: int, pic_h: int) -> list[tuple[int, int]]:
    """The (x, y) of each card of a results page (3 columns right of the filters)."""
    pitch = pic_h + CARD_BODY + 16
    return [
        (330 + (i % 3) * (CARD_W + CARD_GAP), GRID_TOP + (i // 3) * pitch) for i in range(per_page)
    ]


def _results_height(per_page: int, pic_h: int) -> int:
    """Document height of a results page (grid, pagination, footer) as `_results_page` draws it."""
    return _results_layout(per_page, pic_h)[-1][1] + pic_h + CARD_BODY + 20 + 80 + 220


def _target_positions(per_page: int, pic_h: int, scroll: int, listed: bool) -> list[int]:
    """Card positions the objective's item may take on a results page seen from `scroll`.

    listed: cards whose reserved name area is fully in view. Not listed: cards whose name is
    entirely below the fold, provided some such card shows >= 60 px of its picture at the bottom
    (the visible hint that the list goes on).
    """
    cells = _results_layout(per_page, pic_h)
    names = [(y + pic_h + 10, y + pic_h + 12 + 3 * NAME_LH + 2) for _, y in cells]
    if listed:
        return [i for i, (a, b) in enumerate(names) if a >= scroll and b < scroll + H]
    pool = [i for i, (a, _) in enumerate(names) if a >= scroll + H]
    return pool if any(cells[i][1] <= scroll + H - 60 for i in pool) else []


def _results_view(
    rng: np.random.Generator, per_page: int, k_scroll: int, listed: bool
) -> tuple[int, int, list[int]]:
    """(picture height, scroll offset, target positions) of a results page.

    The drawn picture height is kept when it works; otherwise one that works is drawn (and the
    scroll reduced if none does), so every page kind succeeds without open-ended retries.
    """
    pic_h = int(rng.integers(180, 261))
    for k in range(k_scroll, -1, -1):

        def scroll_of(ph: int, k: int = k) -> int:  # browsers stop at the end of the page
            return min(k * SCROLL_STEP, max(0, _results_height(per_page, ph) - H))

        pool = _target_positions(per_page, pic_h, scroll_of(pic_h), listed)
        if pool:
            return pic_h, scroll_of(pic_h), pool
        ok = [
            ph for ph in range(180, 261) if _target_positions(per_page, ph, scroll_of(ph), listed)
        ]
        if ok:
            ph = ok[int(rng.integers(len(ok)))]
            return ph, scroll_of(ph), _target_positions(per_page, ph, scroll_of(ph), listed)
    return pic_h, 0, []


def _results_page(
    d: _Doc,
    rng: np.random.Generator,
    query: str,
    products: Sequence[_Product],
    total: int,
    filters: tuple[int, int],
    pic_h: int,
) -> None:
    t = d.theme
    y = HEADER_H + 24
    box = d.link(40, y + 8, "Home", 13)
    d.ops.append(
        Text((box[2] + 8, y + 8), f"›  Search results for: '{query}'", 13, t.muted, False, "lm")
    )
    d.ops.append(
        Text((40, y + 54), f"Search results for: '{query}'", 30, (40, 40, 40), False, "lm")
    )
    ty = y + 100
    # filters
    fy = ty
    d.ops.append(Text((40, fy), "Shop By", 20, (40, 40, 40), True, "la"))
    d.ops.append(Text((40, fy + 40), "Shopping Options", 14, t.muted, True, "la"))
    fy += 76
    n_cat, n_price = filters
    if n_cat:
        d.ops.append(Text((40, fy), "CATEGORY", 13, (60, 60, 60), True, "la"))
        fy += 30
        cat = products[0].category
        subs = [cat, *[c for c in NAV_CATEGORIES if c != cat]]
        for s in subs[:n_cat]:
            d.link(40, fy + 9, f"{ui.ellipsize(s, 14, 200)} ({int(rng.integers(1, 40))})", 14)
            fy += 30
        fy += 16
    if n_price:
        d.ops.append(Text((40, fy), "PRICE", 13, (60, 60, 60), True, "la"))
        fy += 30
        lo = 0
        for _ in range(n_price):
            hi = lo + int(rng.integers(1, 5)) * 10
            d.link(40, fy + 9, f"${lo}.00 - ${hi - 1}.99 ({int(rng.integers(1, 30))})", 14)
            lo, fy = hi, fy + 30
    # toolbar
    d.ops.append(
        Text((330, ty + 20), f"Items 1-{len(products)} of {total}", 14, (60, 60, 60), False, "lm")
    )
    sx = W - 40 - 170
    d.ops.append(Text((sx - 70, ty + 20), "Sort By", 14, (60, 60, 60), False, "lm"))
    sb = (sx, ty + 2, W - 41, ty + 38)
    d.ops.extend(ui.text_field_ops(sb, "Relevance", 14, t, 2, placeholder=False))
    d.ops.append(
        Glyph("chevron_down", (sb[2] - 26, sb[1] + 10, sb[2] - 10, sb[1] + 26), (90, 90, 90))
    )
    d.marks.append(_Mark("combobox", "Relevance", sb, "sort"))
    cells = _results_layout(len(products), pic_h)
    for p, (x, cy) in zip(products, cells, strict=True):
        _product_card(d, x, cy, CARD_W, p, False, pic_h)
    end = cells[-1][1] + pic_h + CARD_BODY + 20
    # pagination (below the grid)
    x = 330
    d.ops.append(Text((x, end + 20), "Page", 14, t.muted, False, "lm"))
    x += 50
    pages = -(-total // len(products))
    for k in range(1, min(pages, 4) + 1):
        if k == 1:
            d.ops.append(Rect((x - 6, end + 6, x + 16, end + 34), fill=(235, 235, 235)))
            d.ops.append(Text((x + 5, end + 20), "1", 14, (40, 40, 40), True, "mm"))
            x += 36
        else:
            b = d.link(x, end + 20, str(k), 14)
            x = b[2] + 34
    d.link(x + 10, end + 20, "Next ›", 14)
    d.height = _footer(d, end + 80)


def _item_page(d: _Doc, rng: np.random.Generator, p: _Product, related: Sequence[_Product]) -> None:
    t = d.theme
    y = HEADER_H + 20
    b = d.link(40, y + 8, "Home", 13)
    x = b[2] + 8
    d.ops.append(Text((x, y + 8), "›", 13, t.muted, False, "lm"))
    b = d.link(x + 16, y + 8, p.category, 13)
    d.ops.append(
        Text((b[2] + 8, y + 8), "›  " + ui.ellipsize(p.name, 13, 700), 13, t.muted, False, "lm")
    )
    y += 40
    d.ops.append(ui.picture_op(rng, (40, y, 599, y + 519)))
    d.ops.append(Rect((40, y, 599, y + 519), outline=(225, 225, 225)))
    for k in range(4):
        tb = (40 + k * 96, y + 534, 40 + k * 96 + 85, y + 619)
        d.ops.append(ui.picture_op(rng, tb))
        d.ops.append(
            Rect(tb, outline=t.accent if k == 0 else (225, 225, 225), width=2 if k == 0 else 1)
        )
    rx, rw = 640, W - 40 - 640
    lines = ui.wrap(p.name, 28, rw)[:3]
    for i, s in enumerate(lines):
        d.ops.append(Text((rx, y + i * 38), s, 28, (40, 40, 40), False, "la"))
    ry = y + len(lines) * 38 + 22
    d.ops.extend(ui.stars_ops(rx, ry, p.rating, 18, (255, 165, 0), (220, 220, 220)))
    b = d.link(rx + 5 * 20 + 14, ry, f"{p.reviews} Reviews", 14, key="reviews")
    d.link(b[2] + 22, ry, "Add Your Review", 14)
    ry += 56
    d.ops.append(Text((rx, ry), p.price, 34, (30, 30, 30), True, "lm"))
    sku = f"SKU: B0{int(rng.integers(10**7, 10**8))}"
    d.ops.append(Text((W - 40, ry - 10), "IN STOCK", 13, (60, 60, 60), True, "rm"))
    d.ops.append(Text((W - 40, ry + 12), sku, 13, t.muted, False, "rm"))
    ry += 48
    d.ops.append(Line((rx, ry, W - 41, ry), t.border, 1))
    ry += 24
    d.ops.append(Text((rx, ry + 48), "Qty", 14, (60, 60, 60), True, "lm"))
    qb = (rx + 40, ry + 26, rx + 99, ry + 71)
    d.ops.extend(ui.text_field_ops(qb, "1", 16, t, 2, placeholder=False))
    d.marks.append(_Mark("textbox", "Qty", qb, "qty"))
    cb = (rx + 120, ry + 26, rx + 120 + 239, ry + 71)
    d.button(cb, "Add to Cart", size=17, key="add_to_cart")
    ry += 100
    b = d.link(rx, ry, "Add to Wish List", 13, color=(90, 90, 90), key="wish")
    d.link(b[2] + 30, ry, "Add to Compare", 13, color=(90, 90, 90))
    # tabs and description
    ty = y + 660
    tx = 40
    for s in ("Details", "More Information", f"Reviews ({p.reviews})"):
        w = ui.text_width(s, 15, True) + 40
        tb = (tx, ty, tx + w - 1, ty + 43)
        d.ops.append(
            Rect(tb, fill=ui.WHITE if tx == 40 else (240, 240, 240), outline=(210, 210, 210))
        )
        d.ops.append(Text(((tb[0] + tb[2]) // 2, ty + 22), s, 15, (40, 40, 40), True, "mm"))
        d.marks.append(_Mark("link", s, tb, "tab"))
        tx += w + 4
    d.ops.append(Line((40, ty + 43, W - 41, ty + 43), (210, 210, 210), 1))
    idx = rng.choice(len(DESCRIPTION_SENTENCES), 4, replace=False)
    desc = f"The {p.name} is a great choice in {p.category}. " + " ".join(
        DESCRIPTION_SENTENCES[int(i)] for i in idx
    )
    lines = ui.wrap(desc, 15, W - 80)
    d.ops.extend(ui.paragraph_ops(40, ty + 68, lines, 15, (60, 60, 60), 24))
    y = ty + 68 + len(lines) * 24 + 40
    if related:
        d.ops.append(Text((40, y), "Related Products", 22, (40, 40, 40), False, "la"))
        y += 50
        cw = (W - 80 - 3 * CARD_GAP) // 4
        for k, q in enumerate(related[:4]):
            _product_card(d, 40 + k * (cw + CARD_GAP), y, cw, q, True, 180)
        y += CARD_H
    d.height = _footer(d, y + 40)


# --------------------------------------------------------------------------------------------
# Viewport, set-of-marks, sample
# --------------------------------------------------------------------------------------------


def _visible(box: Box, scroll: int) -> bool:
    return box[1] >= scroll and box[3] < scroll + H and box[0] >= 0 and box[2] < W


def _finalize(
    d: _Doc, rng: np.random.Generator, scroll: int
) -> tuple[Page, list[tuple[int, _Mark, Box]]]:
    """Scroll the document into the viewport, mark the fully visible elements, draw the marks."""
    ops = [ui.translate(op, 0, -scroll) for op in d.ops] if scroll else list(d.ops)
    vis = [m for m in d.marks if _visible(m.box, scroll)]
    vis.sort(key=lambda m: (m.box[1], m.box[0]))
    ids = np.sort(rng.choice(999, len(vis), replace=False) + 1)
    c0 = int(rng.integers(len(SOM_COLORS)))
    marked: list[tuple[int, _Mark, Box]] = []
    for k, (m, som) in enumerate(zip(vis, ids, strict=True)):
        color = SOM_COLORS[(c0 + k) % len(SOM_COLORS)]
        x1, y1, x2, y2 = m.box[0], m.box[1] - scroll, m.box[2], m.box[3] - scroll
        ops.append(Rect((x1, y1, x2, y2), outline=color, width=2))
        label = str(int(som))
        tw, th = ui.text_width(label, 12, True) + 6, 16
        tx, ty = x1, y1 - th  # above the top-left corner; left of it where there is no room above
        if ty < 0:
            tx, ty = (x1 - tw, y1) if x1 - tw >= 0 else (x1, y1)
        ops.append(Rect((tx, ty, tx + tw - 1, ty + th - 1), fill=color))
        ops.append(Text((tx + tw // 2, ty + th // 2), label, 12, ui.WHITE, True, "mm"))
        marked.append((int(som), m, (x1, y1, x2, y2)))
    return Page((W, H), ui.WHITE, tuple(ops)), marked


class SynthWebAction(SynthDataset):
    """Procedural web next-action prediction on a set-of-marks shopping-site screenshot."""

    name = "SynthWebAction"

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        # the page kind is drawn once, so the six GT rules stay equally likely whatever the retries
        page_kind = PAGE_KINDS[int(rng.integers(len(PAGE_KINDS)))]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            out = _attempt(rng, page_kind)
            if out is not None:
                return self._sample(sample_id, out, attempt)
        raise RuntimeError(
            f"{sample_id}: no valid page in {MAX_ATTEMPTS} attempts"
        )  # pragma: no cover

    def _sample(self, sample_id: str, out: _Attempt, attempt: int) -> Sample:
        objects = tuple(
            SceneObject(
                str(som),
                m.role,
                {"som_id": som, "text": m.text, "role": m.role},
                tuple(float(v) for v in box),
            )
            for som, m, box in out.marked
        )
        prev = "\n".join(out.previous) if out.previous else "None"
        return Sample(
            sample_id=sample_id,
            question=f"<image>OBJECTIVE: {out.objective}\nPREVIOUS ACTIONS:\n{prev}",
            image=functools.partial(ui.render_page, out.page),
            answer=out.answer,
            answer_kind="web_action",
            objects=objects,
            target_ids=(str(out.target),) if out.target is not None else (),
            meta={**out.meta, "generator": self.name, "attempts": attempt},
        )


@dataclass(frozen=True)
class _Attempt:
    page: Page
    marked: list[tuple[int, _Mark, Box]]
    answer: str
    target: int | None  # SoM id the action acts on
    objective: str
    previous: list[str]
    meta: dict


def _attempt(rng: np.random.Generator, page_kind: str) -> _Attempt | None:
    """One try at a page of `page_kind`; None if the draw doesn't satisfy the constraints."""
    objective_kind = {"price": "price", "cart": "cart"}.get(page_kind) or (
        "price" if rng.random() < 0.5 else "cart"
    )
    kind, cat = _random_kind(rng)
    theme = _shop_theme(rng)
    link_color = (0, 107, 180) if rng.random() < 0.6 else ui.mix(theme.accent, ui.BLACK, 0.15)
    d = _Doc(rng, theme, link_color)
    store = STORE_NAMES[int(rng.integers(len(STORE_NAMES)))]
    query = kind.noun.lower()
    scroll, prev = 0, []
    cart_count = int(rng.integers(0, 6))
    if page_kind == "search":
        target = _products(rng, kind, cat, 1, set())[0]
        _home_page(d, rng, kind)
    elif page_kind in ("listed", "more"):
        per_page = (12, 15, 18, 24)[int(rng.integers(4))]
        k_scroll = int(rng.integers(0, 3)) if rng.random() < 0.5 else 0
        pic_h, scroll, positions = _results_view(rng, per_page, k_scroll, page_kind == "listed")
        if not positions:
            return None
        products = _products(rng, kind, cat, per_page, set())
        target = products[positions[int(rng.integers(len(positions)))]]
        total = per_page + int(rng.integers(1, 60))
        filters = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        _results_page(d, rng, query, products, total, filters, pic_h)
        prev = [f"type [search box] [{query}]"] + ["scroll [down]"] * -(-scroll // SCROLL_STEP)
    else:
        pool = _products(rng, kind, cat, 6, set())
        target, other = pool[0], pool[1]
        shown = other if page_kind == "other" else target
        rel_kind, rel_cat = (kind, cat) if rng.random() < 0.5 else _random_kind(rng, kind)
        related = _products(rng, rel_kind, rel_cat, 4, {q.name for q in pool})
        _item_page(d, rng, shown, related[: int(rng.integers(0, 5))])
        prev = (
            [f"type [search box] [{query}]"]
            + ["scroll [down]"] * int(rng.integers(0, 2))
            + [f"click [{shown.name}]"]
        )
    # the header goes in last, sized to the element budget the visible content leaves
    if scroll == 0:
        n_content = sum(_visible(m.box, scroll) for m in d.marks)
        if n_content + 4 > MAX_MARKS:
            return None
        n_strip, n_cats = _nav_fit(rng, MAX_MARKS - n_content)
        hdr = _Doc(rng, theme, link_color)
        # the results page shows the query in the box; the home and item pages show the placeholder
        _header(
            hdr,
            store,
            query if page_kind in ("listed", "more") else None,
            n_strip,
            n_cats,
            cart_count,
        )
        d.ops[:0] = hdr.ops
        d.marks[:0] = hdr.marks
    page, marked = _finalize(d, rng, scroll)
    if not MIN_MARKS <= len(marked) <= MAX_MARKS:
        return None
    by_key = {m.key: som for som, m, _ in marked if m.key}
    templates = PRICE_OBJECTIVES if objective_kind == "price" else CART_OBJECTIVES
    objective = templates[int(rng.integers(len(templates)))].format(item=target.name)
    target_som: int | None = None
    if page_kind == "search":
        target_som = by_key["search_box"]
        answer = f"type [{target_som}] [{query}]"
    elif page_kind == "listed":
        target_som = by_key[f"product:{target.name}"]
        answer = f"click [{target_som}]"
    elif page_kind == "more":
        answer = "scroll [down]"
    elif page_kind == "other":
        answer = "go_back"
    elif objective_kind == "price":
        answer = f"stop [{target.price}]"
    else:
        if "add_to_cart" not in by_key:
            return None
        target_som = by_key["add_to_cart"]
        answer = f"click [{target_som}]"
    meta = {
        "page_kind": page_kind,
        "objective_kind": objective_kind,
        "item": target.name,
        "price": target.price,
        "query": query,
        "scroll": scroll,
        "store": store,
    }
    return _Attempt(page, marked, answer, target_som, objective, prev, meta)
