"""Web tasks in a real browser (docs/web.md): live MiniWoB++ episodes (`ViGoRL/MiniWoB-v0`) and
grounding data rendered by Chromium with DOM-exact boxes (`ViGoRL/RenderedGrounding-v0`).

They need the `web` extra (playwright, miniwob) and a Chromium executable (Debian's `chromium`);
Playwright is imported only when a browser is first used, so importing this package costs nothing
and nothing else in the library depends on it.
"""
