"""Set-of-marks for live pages (docs/web.md#set-of-marks): which elements get an id, the boxes, the
drawing and the text listing.

As in VisualWebArena's set-of-marks observations, every interactive element that can be seen gets
a numeric id; its box is outlined in a colour and the id is written in a tag of that colour at the
box's top-left; the text beside the screenshot lists the marked elements as `[id] [role] [text]`.

What counts as interactive: links, buttons, form fields, elements with an ARIA widget role, a
`tabindex`, an `onclick` (or a d3/DOM click listener property) or a pointer cursor that their parent
does not already have. An element is marked only if it is rendered, intersects the viewport clip
and is not hidden under another element at its centre (a modal cover hides everything under it).
Ids are 1, 2, … in document order; each marked element gets the attribute `data-vigorl-som` with
its id, so an action finds exactly the element that was drawn. Boxes are
`getBoundingClientRect()` × device pixel ratio, in screenshot pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from vigorl_env.data.synth.common import font
from vigorl_env.data.synth.webaction_rules import SOM_COLORS as WEBACTION_SOM_COLORS

SOM_ATTR = "data-vigorl-som"
MAX_TEXT = 80
"""Element texts longer than this are cut (with an ellipsis) in the listing."""
SOM_COLORS = WEBACTION_SOM_COLORS  # one palette for the drawn and the live web pages
"""matplotlib's tab10 (VisualWebArena's mark colours); mark k gets colour (k - 1) mod 10."""

# Runs in the page: (clip [x, y, w, h] in CSS px, max text) -> list of marks (CSS px boxes).
MARK_JS = r"""
([clip, maxText]) => {
  const ATTR = 'data-vigorl-som';
  document.querySelectorAll('[' + ATTR + ']').forEach(e => e.removeAttribute(ATTR));
  const SEL = 'a[href], button, input, select, textarea, summary, [role=button], [role=link], ' +
    '[role=checkbox], [role=radio], [role=tab], [role=menuitem], [role=option], [role=switch], ' +
    '[role=textbox], [role=combobox], [role=slider], [onclick], [tabindex]:not([tabindex^="-"]), ' +
    '[contenteditable=true]';
  const SKIP_ROLES = ['presentation', 'none', 'dialog', 'alertdialog', 'tabpanel', 'region',
    'document', 'group', 'alert', 'status', 'log', 'tooltip'];
  const norm = s => (s || '').replace(/\s+/g, ' ').trim();
  const cut = s => s.length > maxText ? s.slice(0, maxText - 1) + '…' : s;
  const all = Array.from(document.body ? document.body.querySelectorAll('*') : []);
  const clickable = el => {
    if (SKIP_ROLES.includes((el.getAttribute('role') || '').toLowerCase())) return false;
    if (el.matches(SEL)) return true;
    if (el.onclick || el.__onclick) return true;
    const cur = getComputedStyle(el).cursor;
    if (cur === 'pointer') {
      const p = el.parentElement;
      return !(p && getComputedStyle(p).cursor === 'pointer');
    }
    return false;
  };
  const roleOf = el => {
    const r = el.getAttribute('role');
    if (r) return r;
    const tag = el.tagName.toLowerCase();
    if (tag === 'a') return 'link';
    if (tag === 'button' || tag === 'summary') return 'button';
    if (tag === 'select') return 'combobox';
    if (tag === 'textarea') return 'textbox';
    if (tag === 'input') {
      const t = (el.getAttribute('type') || 'text').toLowerCase();
      if (['button', 'submit', 'reset', 'image'].includes(t)) return 'button';
      if (t === 'checkbox' || t === 'radio') return t;
      if (t === 'range') return 'slider';
      return 'textbox';
    }
    if (el.isContentEditable) return 'textbox';
    return 'clickable';
  };
  const labelOf = el => {
    const aria = el.getAttribute('aria-label');
    if (aria) return norm(aria);
    if (el.id) {
      const l = document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
      if (l) return norm(l.innerText);
    }
    const wrap = el.closest('label');
    if (wrap && wrap !== el) return norm(wrap.innerText);
    // an unlabelled field right after its caption (`<label>Username</label><input>`)
    const prev = el.previousElementSibling;
    if (prev && !prev.matches(SEL)) {
      const t = norm(prev.innerText);
      if (t && t.length <= 40) return t;
    }
    return '';
  };
  const textOf = (el, role) => {
    const tag = el.tagName.toLowerCase();
    let t = '';
    if (tag === 'input' || tag === 'textarea' || tag === 'select') {
      t = labelOf(el) || norm(el.getAttribute('placeholder')) || norm(el.getAttribute('title'));
      if (['button'].includes(role) && el.value) t = norm(el.value);
      if (role === 'checkbox' || role === 'radio') t += el.checked ? ' (checked)' : '';
      else if (role === 'textbox' && el.value) t += (t ? ' ' : '') + 'value: "' + norm(el.value) + '"';
      else if (tag === 'select' && el.selectedIndex >= 0)
        t += (t ? ' ' : '') + 'selected: "' + norm(el.options[el.selectedIndex].text) + '"';
    } else {
      t = norm(el.getAttribute('aria-label')) || norm(el.innerText) ||
          norm(el.getAttribute('title')) || norm(el.getAttribute('alt'));
    }
    return cut(t);
  };
  const [cx, cy, cw, ch] = clip;
  const marks = [];
  for (const el of all) {
    if (!clickable(el)) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none' || parseFloat(st.opacity) === 0) continue;
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    if (r.right <= cx || r.bottom <= cy || r.left >= cx + cw || r.top >= cy + ch) continue;
    const px = Math.min(Math.max((r.left + r.right) / 2, cx), cx + cw - 1);
    const py = Math.min(Math.max((r.top + r.bottom) / 2, cy), cy + ch - 1);
    const top = document.elementFromPoint(px, py);
    if (!top || !(top === el || el.contains(top) || top.contains(el) ||
                  (top.tagName === 'LABEL' && top.contains(el)) || (top.control === el))) continue;
    const role = roleOf(el);
    marks.push({el, role, text: textOf(el, role),
                box: [r.left - cx, r.top - cy, r.right - cx, r.bottom - cy]});
  }
  // a clickable inside another marked clickable of the same box is one element, not two
  const out = [];
  for (const m of marks) {
    const dup = out.find(o => o.el.contains(m.el) && Math.abs(o.box[0] - m.box[0]) < 1 &&
      Math.abs(o.box[1] - m.box[1]) < 1 && Math.abs(o.box[2] - m.box[2]) < 1 &&
      Math.abs(o.box[3] - m.box[3]) < 1);
    if (!dup) out.push(m);
  }
  return out.map((m, i) => {
    m.el.setAttribute(ATTR, String(i + 1));
    return {id: i + 1, role: m.role, text: m.text, box: m.box,
            tag: m.el.tagName.toLowerCase()};
  });
}
"""


@dataclass(frozen=True)
class Mark:
    """One marked element: its id, role, text and box (screenshot pixels, x1 y1 x2 y2)."""

    id: int
    role: str
    text: str
    box: tuple[float, float, float, float]
    tag: str = ""

    def to_info(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "text": self.text, "box": list(self.box)}


def marks_from_js(raw: list[dict[str, Any]], scale: float, size: tuple[int, int]) -> list[Mark]:
    """`MARK_JS` output (CSS px) to `Mark`s in screenshot pixels (× `scale`, clipped to `size`)."""
    w, h = size
    out = []
    for m in raw:
        x1, y1, x2, y2 = (float(v) * scale for v in m["box"])
        box = (max(0.0, x1), max(0.0, y1), min(float(w - 1), x2), min(float(h - 1), y2))
        out.append(Mark(int(m["id"]), str(m["role"]), str(m["text"]), box, str(m.get("tag", ""))))
    return out


def draw_marks(img: Image.Image, marks: list[Mark], scale: float = 1.0) -> Image.Image:
    """The screenshot with each mark's box outlined and its id in a tag (a new image)."""
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(10, round(7 * scale))
    fnt = font(size, True)
    lw = max(1, round(scale * 0.8))
    for m in marks:
        color = SOM_COLORS[(m.id - 1) % len(SOM_COLORS)]
        x1, y1, x2, y2 = (round(v) for v in m.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=lw)
        label = str(m.id)
        left, top, right, bottom = fnt.getbbox(label)
        tw, th = right - left + 4, bottom - top + 4
        tx, ty = x1, y1 - th  # above the top-left corner; inside it where there is no room above
        if ty < 0:
            ty = y1
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=color)
        draw.text((tx + 2 - left, ty + 2 - top), label, fill=(255, 255, 255), font=fnt)
    return out


def listing(marks: list[Mark]) -> str:
    """The `[id] [role] [text]` lines (one per mark, id order); "(none)" without marks."""
    if not marks:
        return "(none)"
    return "\n".join(f"[{m.id}] [{m.role}] [{m.text}]" for m in marks)
