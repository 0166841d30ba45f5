"""episodes.png of the main job: each episode readable at a glance (sizes, marks, no overlaps)."""

from matplotlib.backends.backend_agg import FigureCanvasAgg

from benchmarks.picture import episodes_figure, episodes_picture
from benchmarks.run import Args

ARGS = Args(envs=("ViGoRL/SynthGrounding-v0", "ViGoRL/SynthWebAction-v0"))


def _axes(fig, gid):
    (ax,) = [a for a in fig.axes if a.get_gid() == gid]
    return ax


def test_tall_screenshot_and_web_page_are_drawn_large():
    fig = episodes_figure(ARGS)
    renderer = FigureCanvasAgg(fig).get_renderer()
    phone = _axes(fig, "frame_0").get_window_extent(renderer)  # 1176x2520 model frame
    assert phone.height >= 1500 and abs(phone.height / phone.width - 2520 / 1176) < 0.01
    web = _axes(fig, "frame_1").get_window_extent(renderer)  # 1288x1428 web page
    assert web.width >= 0.85 * 1288  # near 1:1: its text stays readable
    # the grounding episode's ground-truth box and point answer are drawn, not only captioned
    gids = {a.get_gid() for a in [*_axes(fig, "frame_0").patches, *_axes(fig, "frame_0").lines]}
    assert {"gt_box_1", "answer_point", "crop_box_1"} <= gids
    # the title is the figure's first text and overlaps nothing
    title = fig.texts[0]
    assert title.get_text().startswith("random-zoom baseline")
    box = title.get_window_extent(renderer)
    assert not any(box.overlaps(t.get_window_extent(renderer)) for t in fig.texts[1:])
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_picture_file_is_the_figure(tmp_path):
    from PIL import Image

    path = episodes_picture(ARGS, tmp_path / "episodes.png")
    fig = episodes_figure(ARGS)
    w, h = fig.get_size_inches() * fig.dpi
    assert Image.open(path).size == (round(w), round(h))
