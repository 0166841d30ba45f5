"""HTML page templates for the rendered grounding data (docs/web.md#rendered-grounding).

A page is a pure function of a numpy Generator: kind (news, shop, form, dashboard, settings),
theme (light, dark, sepia, midnight), font family, viewport (desktop, laptop, tablet, phone, at
device pixel ratios 1–2), a top bar, sometimes a sidebar, a footer, and kind-specific content.
Every interactive element carries `data-gid="eN"`; what it is (role, visible label, the card or
row it belongs to, the page region) is kept in Python beside the HTML, so nothing about the ground
truth has to be read back from the page except the boxes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

THEMES: dict[str, dict[str, str]] = {
    "light": {"bg": "#ffffff", "fg": "#1f2328", "panel": "#f6f8fa", "border": "#d0d7de",
              "accent": "#0969da", "on_accent": "#ffffff", "muted": "#59636e"},
    "dark": {"bg": "#0d1117", "fg": "#e6edf3", "panel": "#161b22", "border": "#3d444d",
             "accent": "#2f81f7", "on_accent": "#ffffff", "muted": "#9198a1"},
    "sepia": {"bg": "#fbf1e3", "fg": "#3b2f2f", "panel": "#f1e3cf", "border": "#c9b79c",
              "accent": "#a0522d", "on_accent": "#ffffff", "muted": "#7a6650"},
    "midnight": {"bg": "#1e1e2e", "fg": "#cdd6f4", "panel": "#313244", "border": "#585b70",
                 "accent": "#f5c2e7", "on_accent": "#1e1e2e", "muted": "#a6adc8"},
}  # fmt: skip
FONTS: tuple[str, ...] = (
    "'DejaVu Sans', sans-serif",
    "'DejaVu Serif', serif",
    "'Liberation Sans', Arial, sans-serif",
    "'Liberation Serif', 'Times New Roman', serif",
    "'DejaVu Sans Mono', monospace",
)
VIEWPORTS: tuple[tuple[int, int, float], ...] = (
    (1280, 800, 1.0),
    (1440, 900, 1.0),
    (1280, 720, 1.5),
    (1024, 768, 1.25),
    (820, 1180, 1.0),
    (390, 844, 2.0),
)
"""(CSS width, CSS height, device pixel ratio); the screenshot is width·dpr × height·dpr."""
KINDS = ("news", "shop", "form", "dashboard", "settings")

_WORDS = [
    "river",
    "market",
    "solar",
    "city",
    "garden",
    "harbor",
    "quiet",
    "bright",
    "winter",
    "summer",
    "north",
    "digital",
    "local",
    "open",
    "green",
    "silver",
    "rapid",
    "urban",
    "coastal",
    "future",
    "modern",
    "ancient",
    "hidden",
    "golden",
]
_NOUNS = [
    "council",
    "plan",
    "report",
    "festival",
    "update",
    "study",
    "project",
    "bridge",
    "library",
    "budget",
    "station",
    "museum",
    "school",
    "park",
    "network",
    "forecast",
    "election",
    "league",
    "record",
    "review",
]
_PRODUCTS = [
    "Aurora Lamp",
    "Nimbus Chair",
    "Cedar Desk",
    "Pixel Headphones",
    "Orbit Watch",
    "Summit Backpack",
    "Echo Speaker",
    "Harbor Mug",
    "Atlas Notebook",
    "Breeze Fan",
    "Comet Kettle",
    "Drift Sneakers",
    "Ember Candle",
    "Fjord Jacket",
    "Glacier Bottle",
    "Lumen Torch",
]
_PEOPLE = [
    "Ada Park",
    "Ben Ortiz",
    "Chloe Wu",
    "Dev Patel",
    "Ella Novak",
    "Finn Berg",
    "Gia Rossi",
    "Hugo Laine",
]
_ICONS = {
    "☰": "menu",
    "⚙": "settings",
    "✉": "messages",
    "★": "favourites",
    "⌕": "search",
    "✕": "close",
}
_SETTINGS = [
    "Email notifications",
    "Push notifications",
    "Dark mode",
    "Two-factor login",
    "Auto-play videos",
    "Show online status",
    "Weekly digest",
    "Location access",
    "Sync contacts",
    "Compact layout",
]
_FIELDS = [
    "Full name",
    "Email address",
    "Phone number",
    "Street address",
    "City",
    "Postal code",
    "Company",
    "Job title",
]


@dataclass
class Element:
    """An interactive element of a page (what the instruction can name)."""

    gid: str
    role: str  # button, link, textbox, checkbox, radio, select, icon, tab
    label: str
    region: str  # top bar, sidebar, main content, footer
    ctx: str | None = None  # the card/row title it belongs to


@dataclass
class PageSpec:
    kind: str
    theme: str
    font: str
    viewport: tuple[int, int, float]
    html: str
    elements: list[Element] = field(default_factory=list)


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.elements: list[Element] = []
        self.region = "main content"
        self.ctx: str | None = None

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def el(self, role: str, label: str, tag_html: str) -> str:
        """Register an element; `tag_html` has a `{gid}` placeholder for its attribute."""
        gid = f"e{len(self.elements)}"
        self.elements.append(Element(gid, role, label, self.region, self.ctx))
        return tag_html.replace("{gid}", f'data-gid="{gid}"')

    def button(self, label: str, primary: bool = False) -> str:
        cls = "btn primary" if primary else "btn"
        return self.el(
            "button", label, f'<button {{gid}} class="{cls}">{html.escape(label)}</button>'
        )

    def link(self, label: str) -> str:
        return self.el("link", label, f'<a {{gid}} href="#">{html.escape(label)}</a>')

    def icon(self, glyph: str) -> str:
        name = _ICONS[glyph]
        return self.el(
            "icon", name, f'<button {{gid}} class="icon" aria-label="{name}">{glyph}</button>'
        )

    def textbox(self, label: str, placeholder: str = "") -> str:
        lab = html.escape(label)
        field = self.el(
            "textbox",
            label,
            f'<input {{gid}} type="text" placeholder="{html.escape(placeholder)}">',
        )
        return f'<label class="field"><span>{lab}</span>{field}</label>'

    def check(self, label: str, role: str = "checkbox", name: str = "c") -> str:
        kind = "checkbox" if role == "checkbox" else "radio"
        checked = " checked" if self.rng.random() < 0.3 else ""
        box = self.el(role, label, f'<input {{gid}} type="{kind}" name="{name}"{checked}>')
        return f'<label class="check">{box} {html.escape(label)}</label>'

    def select(self, label: str, options: list[str]) -> str:
        opts = "".join(f"<option>{html.escape(o)}</option>" for o in options)
        sel = self.el("select", label, f"<select {{gid}}>{opts}</select>")
        return f'<label class="field"><span>{html.escape(label)}</span>{sel}</label>'

    def tab(self, label: str, active: bool) -> str:
        cls = "tab active" if active else "tab"
        return self.el(
            "tab", label, f'<button {{gid}} class="{cls}" role="tab">{html.escape(label)}</button>'
        )

    def words(self, n: int) -> str:
        return " ".join(self.pick(_WORDS) for _ in range(n))

    def title(self) -> str:
        return f"{self.pick(_WORDS).capitalize()} {self.pick(_NOUNS)}"


def _css(theme: dict[str, str], font: str, base: int, narrow: bool) -> str:
    t = theme
    cols = "1fr" if narrow else "repeat(auto-fill, minmax(220px, 1fr))"
    return f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; background: {t["bg"]}; color: {t["fg"]}; font-family: {font}; font-size: {base}px; }}
a {{ color: {t["accent"]}; }}
header {{ display: flex; align-items: center; gap: 14px; padding: 10px 16px; background: {t["panel"]};
  border-bottom: 1px solid {t["border"]}; flex-wrap: wrap; }}
header .logo {{ font-weight: bold; font-size: {base + 6}px; margin-right: 12px; }}
header nav {{ display: flex; gap: 12px; flex-wrap: wrap; }}
header input {{ margin-left: auto; }}
.layout {{ display: flex; }}
aside {{ width: 200px; padding: 14px; border-right: 1px solid {t["border"]}; display: flex;
  flex-direction: column; gap: 10px; flex-shrink: 0; }}
main {{ flex: 1; padding: 16px; display: flex; flex-direction: column; gap: 14px; min-width: 0; }}
footer {{ padding: 12px 16px; border-top: 1px solid {t["border"]}; display: flex; gap: 16px;
  color: {t["muted"]}; flex-wrap: wrap; }}
.grid {{ display: grid; grid-template-columns: {cols}; gap: 12px; }}
.card {{ background: {t["panel"]}; border: 1px solid {t["border"]}; border-radius: 8px; padding: 12px;
  display: flex; flex-direction: column; gap: 8px; align-items: flex-start; }}
.card h3 {{ margin: 0; font-size: {base + 2}px; }}
.muted {{ color: {t["muted"]}; }}
.btn {{ font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid {t["border"]};
  background: {t["panel"]}; color: {t["fg"]}; }}
.btn.primary {{ background: {t["accent"]}; color: {t["on_accent"]}; border-color: {t["accent"]}; }}
.icon {{ font: inherit; font-size: {base + 4}px; width: {base * 2 + 6}px; height: {base * 2 + 6}px;
  border-radius: 50%; border: 1px solid {t["border"]}; background: {t["bg"]}; color: {t["fg"]}; }}
input[type=text], select {{ font: inherit; padding: 5px 8px; border: 1px solid {t["border"]};
  border-radius: 5px; background: {t["bg"]}; color: {t["fg"]}; min-width: 140px; }}
input[type=checkbox], input[type=radio] {{ width: {base + 2}px; height: {base + 2}px; margin: 0 6px 0 0;
  vertical-align: middle; accent-color: {t["accent"]}; }}
.field {{ display: flex; flex-direction: column; gap: 4px; }}
.check {{ display: flex; align-items: center; }}
.row {{ display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }}
.tabs {{ display: flex; gap: 4px; border-bottom: 1px solid {t["border"]}; }}
.tab {{ font: inherit; padding: 6px 14px; border: 1px solid transparent; background: none; color: {t["fg"]}; }}
.tab.active {{ border-color: {t["border"]}; border-bottom-color: {t["bg"]}; background: {t["bg"]};
  font-weight: bold; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ padding: 6px 8px; border-bottom: 1px solid {t["border"]}; text-align: left; }}
.tile {{ font-size: {base + 10}px; font-weight: bold; }}
"""


def _header(b: _Builder, narrow: bool) -> str:
    b.region, b.ctx = "top bar", None
    logo = f'<span class="logo">{b.pick(_WORDS).capitalize()}{b.pick(["ly", "hub", "io", " Daily"])}</span>'
    nav_items = list(
        dict.fromkeys(
            b.pick(["Home", "News", "Shop", "Blog", "About", "Help", "Pricing", "Docs"])
            for _ in range(5)
        )
    )
    nav = "".join(b.link(n) for n in nav_items[: 2 if narrow else 5])
    search = b.el("textbox", "Search", '<input {gid} type="text" placeholder="Search">')
    glyphs = list(dict.fromkeys(b.pick(list(_ICONS)) for _ in range(3)))
    icons = "".join(b.icon(g) for g in glyphs)
    return f"<header>{logo}<nav>{nav}</nav>{search}{icons}</header>"


def _sidebar(b: _Builder, kind: str) -> str:
    b.region, b.ctx = "sidebar", None
    if kind == "shop":
        cats = list(
            dict.fromkeys(
                b.pick(["Lighting", "Furniture", "Audio", "Outdoor", "Kitchen", "Shoes", "Bags"])
                for _ in range(6)
            )
        )
        return (
            "<aside><b>Filters</b>" + "".join(b.check(c, name="f" + c) for c in cats) + "</aside>"
        )
    items = list(
        dict.fromkeys(
            b.pick(
                [
                    "Overview",
                    "Inbox",
                    "Reports",
                    "Projects",
                    "Team",
                    "Billing",
                    "Archive",
                    "Calendar",
                ]
            )
            for _ in range(7)
        )
    )
    return "<aside>" + "".join(b.link(i) for i in items) + "</aside>"


def _news(b: _Builder) -> str:
    parts = []
    for _ in range(int(b.rng.integers(3, 7))):
        title = f"{b.title()} {b.pick(['opens', 'delayed', 'approved', 'wins award', 'expands'])}"
        b.ctx = title
        parts.append(
            f'<div class="card"><h3>{b.link(title)}</h3><span class="muted">{b.words(12)}</span>'
            f'<div class="row">{b.link("Read more")}{b.button("Share")}</div></div>'
        )
    b.ctx = None
    return '<div class="grid">' + "".join(parts) + "</div>"


def _shop(b: _Builder) -> str:
    parts = []
    names = list(b.rng.permutation(_PRODUCTS)[: int(b.rng.integers(3, 9))])
    for name in names:
        b.ctx = str(name)
        price = f"${int(b.rng.integers(5, 300))}.{int(b.rng.integers(0, 100)):02d}"
        parts.append(
            f'<div class="card"><h3>{html.escape(str(name))}</h3><span class="muted">{price}</span>'
            f'<div class="row">{b.button("Add to cart", primary=True)}{b.link("Details")}</div></div>'
        )
    b.ctx = None
    sort = b.select("Sort by", ["Relevance", "Price: low to high", "Newest"])
    return f'<div class="row">{sort}</div><div class="grid">' + "".join(parts) + "</div>"


def _form(b: _Builder) -> str:
    fields = list(b.rng.permutation(_FIELDS)[: int(b.rng.integers(3, 7))])
    inputs = "".join(b.textbox(str(f), b.pick(["", "Required", "Optional"])) for f in fields)
    country = b.select("Country", ["Norway", "Chile", "Japan", "Kenya"])
    ship = "".join(
        b.check(s, role="radio", name="ship") for s in ("Standard shipping", "Express shipping")
    )
    agree = b.check("I agree to the terms") + b.check("Subscribe to the newsletter")
    actions = b.button("Submit", primary=True) + b.button("Cancel")
    return (
        f"<h2>{b.pick(['Checkout', 'Create account', 'Contact us', 'Apply now'])}</h2>"
        f'<div class="grid">{inputs}{country}</div><div class="row">{ship}</div>'
        f'<div class="row">{agree}</div><div class="row">{actions}</div>'
    )


def _dashboard(b: _Builder) -> str:
    tabs = ["Overview", "Reports", "Alerts", "Usage"][: int(b.rng.integers(2, 5))]
    active = int(b.rng.integers(len(tabs)))
    tab_html = (
        '<div class="tabs">' + "".join(b.tab(t, i == active) for i, t in enumerate(tabs)) + "</div>"
    )
    tiles = "".join(
        f'<div class="card"><span class="muted">{b.pick(_NOUNS).capitalize()}</span>'
        f'<span class="tile">{int(b.rng.integers(10, 9999))}</span></div>'
        for _ in range(int(b.rng.integers(2, 5)))
    )
    rows = []
    for person in list(b.rng.permutation(_PEOPLE)[: int(b.rng.integers(2, 6))]):
        b.ctx = str(person)
        rows.append(
            f"<tr><td>{html.escape(str(person))}</td><td>{b.pick(['Active', 'Invited', 'Paused'])}</td>"
            f"<td>{b.button('Edit')} {b.button('Delete')}</td></tr>"
        )
    b.ctx = None
    rng_sel = b.select("Date range", ["Last 7 days", "Last 30 days", "This year"])
    return (
        f'{tab_html}<div class="row">{rng_sel}{b.button("Export", primary=True)}</div>'
        f'<div class="grid">{tiles}</div><table><tr><th>Name</th><th>Status</th><th></th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _settings(b: _Builder) -> str:
    tabs = ["Account", "Privacy", "Notifications", "Appearance"]
    active = int(b.rng.integers(len(tabs)))
    tab_html = (
        '<div class="tabs">' + "".join(b.tab(t, i == active) for i, t in enumerate(tabs)) + "</div>"
    )
    opts = "".join(
        b.check(str(s)) for s in b.rng.permutation(_SETTINGS)[: int(b.rng.integers(3, 8))]
    )
    lang = b.select("Language", ["English", "Deutsch", "Español", "日本語"])
    actions = b.button("Save changes", primary=True) + b.button("Reset")
    return f'{tab_html}<div class="card">{opts}</div><div class="row">{lang}</div><div class="row">{actions}</div>'


_MAIN = {
    "news": _news,
    "shop": _shop,
    "form": _form,
    "dashboard": _dashboard,
    "settings": _settings,
}


def build_page(rng: np.random.Generator) -> PageSpec:
    """A random page (all choices from `rng`)."""
    b = _Builder(rng)
    kind = b.pick(KINDS)
    theme = b.pick(list(THEMES))
    font = b.pick(FONTS)
    viewport = b.pick(VIEWPORTS)
    narrow = viewport[0] < 700
    base = int(rng.integers(13, 18))
    head = _header(b, narrow)
    side = _sidebar(b, kind) if not narrow and rng.random() < 0.7 else ""
    b.region = "main content"
    main = _MAIN[kind](b)
    b.region, b.ctx = "footer", None
    foot_items = list(
        dict.fromkeys(
            b.pick(["Privacy", "Terms", "Contact", "Careers", "Status", "Press"]) for _ in range(4)
        )
    )
    foot = "<footer>" + "".join(b.link(f) for f in foot_items) + "</footer>"
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{_css(THEMES[theme], font, base, narrow)}"
        f"</style></head><body>{head}<div class='layout'>{side}<main>{main}</main></div>{foot}</body></html>"
    )
    return PageSpec(kind, theme, font, viewport, doc, b.elements)
