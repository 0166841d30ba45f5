"""SynthWebAction's shop world: store names, product catalogue, objectives and product drawing.

Why it exists: the catalogue (product types, brands, variants, price ranges) and the objective
templates are the dataset's vocabulary, independent of how pages are laid out; keeping them apart
lets the page builders read as layout only. Split out of `webaction.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
