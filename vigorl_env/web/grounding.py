"""RenderedGrounding: GUI grounding on pages rendered by Chromium, with boxes from the DOM
(docs/web.md#rendered-grounding).

A sample is a pure function of (dataset_seed, split, index), like every procedural dataset: the
page (`vigorl_env.web.pages.build_page`) comes from the sample's RNG, Chromium renders it at the
page's viewport and device pixel ratio, and each interactive element's box is its
`getBoundingClientRect()` × device pixel ratio, in screenshot pixels (exact: no layout
re-implementation can drift from what is drawn). Elements outside the viewport or hidden under
another element are left out. The instruction names one element that it identifies uniquely, by
role and text, then (if needed) the card or row it belongs to, the page region, or its order from
the top. Same sample format as `SynthGrounding` (answer = the target's box as `(x1, y1, x2, y2)`,
objects = every visible interactive element) and the same env (`GroundedReasoningEnv` with the
SynthGrounding family, frame and crop defaults).

Rendered pages are cached on disk, one PNG + JSON per sample (named by sample id and a hash of the
HTML and viewport), so a second epoch, or another process, costs no browser time. The cache folder
is `cache_dir=`, else `$VIGORL_CACHE_DIR/web_grounding`, else `~/.cache/vigorl/web_grounding`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vigorl_env.data.base import Sample, SceneObject
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.env import GroundedReasoningEnv
from vigorl_env.protocol import IMAGE_MARKER
from vigorl_env.web.browser import acquire_host, release_host
from vigorl_env.web.pages import Element, PageSpec, build_page

log = logging.getLogger(__name__)

ENV_ID = "ViGoRL/RenderedGrounding-v0"
RENDER_VERSION = 1
"""Bumped whenever rendering or box extraction changes, so old cache entries are not reused."""
MIN_SIDE = 6
"""Elements smaller than this (screenshot px) on either side are not targets."""

_BOXES_JS = """
() => Array.from(document.querySelectorAll('[data-gid]')).map(el => {
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  let visible = r.width >= 1 && r.height >= 1 && st.visibility !== 'hidden' && st.display !== 'none'
    && r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight;
  if (visible) {
    const top = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    visible = !!top && (top === el || el.contains(top) || top.contains(el) || top.control === el);
  }
  return {gid: el.dataset.gid, box: [r.left, r.top, r.right, r.bottom], visible};
})
"""


def default_cache_dir() -> Path:
    root = os.environ.get("VIGORL_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "vigorl"
    return base / "web_grounding"


def _render(browser: Any, page_html: str, viewport: tuple[int, int, float]) -> tuple[bytes, list]:
    """Screenshot of the viewport and the element boxes in CSS px (runs on the browser thread)."""
    w, h, dpr = viewport
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=dpr)
    try:
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        page.set_content(page_html, wait_until="load")
        page.evaluate("() => document.fonts.ready.then(() => true)")
        rects = page.evaluate(_BOXES_JS)
        png = page.screenshot(animations="disabled", caret="hide")
    finally:
        ctx.close()
    return png, rects


class CachedRender:
    """The picklable image loader of a sample: the cached PNG, rendered again if it went missing."""

    def __init__(
        self, png: Path, page_html: str, viewport: tuple[int, int, float], executable: str | None
    ):
        self.png, self.html, self.viewport, self.executable = png, page_html, viewport, executable

    def __call__(self) -> Image.Image:
        if not self.png.exists():
            host = acquire_host(self.executable)
            try:
                png, _ = host.call(_render, self.html, self.viewport)
            finally:
                release_host(host)
            _write_atomic(self.png, png)
        with Image.open(self.png) as im:
            return im.convert("RGB")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_ORDINALS = ("first", "second", "third", "fourth", "fifth")
_NOUN = {
    "button": 'the "{l}" button',
    "link": 'the "{l}" link',
    "textbox": 'the "{l}" text field',
    "checkbox": 'the "{l}" checkbox',
    "radio": 'the "{l}" option',
    "select": 'the "{l}" drop-down',
    "tab": 'the "{l}" tab',
    "icon": "the {l} icon",
}
_VERBS = ("Click {d}.", "Tap {d}.", "Point at {d}.", "Where is {d}?", "Select {d}.")


def describe(target: Element, box: tuple, others: list[tuple[Element, tuple]]) -> str | None:
    """A description that fits `target` and no other visible element, or None."""
    same = [(e, b) for e, b in others if e.role == target.role and e.label == target.label]
    base = _NOUN[target.role].format(l=target.label)
    if len(same) == 1:
        return base
    if target.ctx is not None and sum(e.ctx == target.ctx for e, _ in same) == 1:
        return f'{base} for "{target.ctx}"'
    if sum(e.region == target.region for e, _ in same) == 1:
        return f"{base} in the {target.region}"
    order = sorted(same, key=lambda eb: (round(eb[1][1]), round(eb[1][0])))
    rank = [e.gid for e, _ in order].index(target.gid)
    if rank < len(_ORDINALS):
        noun = base.removeprefix("the ")
        return f"the {_ORDINALS[rank]} {noun} from the top"
    return None


class RenderedGrounding(SynthDataset):
    """Procedural GUI grounding rendered in Chromium (answer = the target's DOM box)."""

    name = "RenderedGrounding"

    def __init__(
        self,
        split: str = "train",
        dataset_seed: int = 0,
        size: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        executable: str | None = None,
    ):
        super().__init__(split=split, dataset_seed=dataset_seed, size=size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.executable = executable
        self.renders = 0
        """Pages this object rendered (cache misses); what the cache test and benchmark read."""
        self._host: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_host"] = None  # a browser belongs to one process
        return state

    def close(self) -> None:
        """Release this dataset's share of the process's browser (it restarts on the next miss)."""
        if self._host is not None:
            host, self._host = self._host, None
            release_host(host)

    def _page(self, rng: np.random.Generator, sample_id: str) -> tuple[PageSpec, Path, dict]:
        spec = build_page(rng)
        digest = hashlib.sha256(
            json.dumps([RENDER_VERSION, spec.html, list(spec.viewport)]).encode("utf-8")
        ).hexdigest()[:16]
        stem = self.cache_dir / f"{sample_id}-{digest}"
        meta_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
        if meta_path.exists() and png_path.exists():
            try:
                return spec, png_path, json.loads(meta_path.read_text("utf-8"))
            except (OSError, ValueError) as e:  # a torn entry: render again
                log.warning("%s: unreadable cache entry (%s); rendering again", meta_path, e)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if self._host is None:
            self._host = acquire_host(self.executable)
        png, rects = self._host.call(_render, spec.html, spec.viewport)
        self.renders += 1
        dpr = spec.viewport[2]
        with Image.open(io.BytesIO(png)) as im:
            size = im.size
        meta = {
            "size": list(size),
            "elements": [
                {"gid": r["gid"], "visible": bool(r["visible"]), "box": [v * dpr for v in r["box"]]}
                for r in rects
            ],
        }
        _write_atomic(png_path, png)
        _write_atomic(meta_path, json.dumps(meta).encode("utf-8"))
        return spec, png_path, meta

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        spec, png_path, meta = self._page(rng, sample_id)
        w, h = meta["size"]
        by_gid = {e.gid: e for e in spec.elements}
        visible: list[tuple[Element, tuple[float, float, float, float]]] = []
        for r in meta["elements"]:
            if r["visible"] and r["gid"] in by_gid:
                x1, y1, x2, y2 = r["box"]
                box = (max(0.0, x1), max(0.0, y1), min(w - 1.0, x2), min(h - 1.0, y2))
                visible.append((by_gid[r["gid"]], box))
        targets = [
            (e, b) for e, b in visible if b[2] - b[0] >= MIN_SIDE and b[3] - b[1] >= MIN_SIDE
        ]
        order = rng.permutation(len(targets))
        for k in order:
            target, box = targets[int(k)]
            desc = describe(target, box, visible)
            if desc is not None:
                break
        else:  # pragma: no cover - every page has a unique top-bar search field
            raise RuntimeError(f"{sample_id}: no element can be described uniquely")
        instruction = _VERBS[int(rng.integers(len(_VERBS)))].format(d=desc)
        instruction = instruction[0].upper() + instruction[1:]
        objects = tuple(
            SceneObject(e.gid, e.role, {"label": e.label, "region": e.region, "context": e.ctx}, b)
            for e, b in visible
        )
        return Sample(
            sample_id=sample_id,
            question=IMAGE_MARKER + instruction,
            image=CachedRender(png_path, spec.html, spec.viewport, self.executable),
            answer=f"({round(box[0])}, {round(box[1])}, {round(box[2])}, {round(box[3])})",
            answer_kind="point_in_box",
            gt_box=box,
            objects=objects,
            target_ids=(target.gid,),
            meta={
                "generator": self.name,
                "kind": spec.kind,
                "theme": spec.theme,
                "font": spec.font,
                "viewport": list(spec.viewport),
                "screen": [w, h],
            },
        )


class RenderedGroundingEnv(GroundedReasoningEnv):
    """`ViGoRL/RenderedGrounding-v0`: the SynthGrounding env over `RenderedGrounding` pages.

    Make kwargs: those of `ViGoRL/SynthGrounding-v0` (docs/envs.md#make-kwargs), plus `cache_dir`
    and `executable` (the Chromium path); neither changes a sample, so neither is in the
    fingerprint. Closing the env releases its share of the process's browser.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike | None = None,
        executable: str | None = None,
        dataset: Any = None,
        **kwargs: Any,
    ):
        if dataset is None:
            dataset = RenderedGrounding(
                split=kwargs.get("split") or "train",
                dataset_seed=kwargs.get("dataset_seed") or 0,
                size=kwargs.get("size"),
                cache_dir=cache_dir,
                executable=executable,
            )
        super().__init__("SynthGrounding", dataset=dataset, **kwargs)
        self.env_id = ENV_ID

    def close(self) -> None:
        close = getattr(self._dataset, "close", None)
        if callable(close):
            close()
        super().close()
