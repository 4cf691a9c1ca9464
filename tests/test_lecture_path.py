"""tools/lecture_path.py: the lecture copy (exactly the tagged cells, in order, with outputs) and the
lecture-path checker (`--check`), one behaviour per test on small made-up notebooks; then the
checker over every notebook of the series."""

import nbformat
import pytest
from helpers import NOTEBOOKS, load_script, png

v4 = nbformat.v4


@pytest.fixture(scope="module")
def lp():
    return load_script("tools/lecture_path.py")


def _notebook(tags_per_cell):
    nb = v4.new_notebook()
    for i, tags in enumerate(tags_per_cell):
        cell = v4.new_code_cell(f"x = {i}", metadata={"tags": tags} if tags else {})
        cell.outputs = [v4.new_output("stream", name="stdout", text=f"{i}\n")]
        nb.cells.append(cell)
    return nb


def test_the_lecture_copy_keeps_only_tagged_cells_in_order_with_outputs(lp, tmp_path):
    src = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([["lecture"], [], ["lecture", "timings"], []]), src)
    out = lp.write_lecture(src, tmp_path / "lecture")
    cells = nbformat.read(out, as_version=4).cells
    assert [c.source for c in cells] == ["x = 0", "x = 2"]
    assert [c.outputs[0].text for c in cells] == ["0\n", "2\n"]


def test_a_notebook_without_a_lecture_path_is_an_error_that_says_so(lp, tmp_path):
    src = tmp_path / "02_y.ipynb"
    nbformat.write(_notebook([[], []]), src)
    with pytest.raises(SystemExit, match="no cell is tagged 'lecture'|no cell tagged 'lecture'"):
        lp.write_lecture(src, tmp_path / "lecture")


# ------------------------------------------------------------------ the checker
def md(text, tagged=True, slide="A short slide."):
    """A markdown cell; tagged `lecture` with `slide` metadata unless told otherwise."""
    metadata = {"tags": ["lecture"]} if tagged else {}
    if tagged and slide is not None:
        metadata["slide"] = slide
    return v4.new_markdown_cell(text, metadata=metadata)


def code(source, tagged=True, output=None, figure=False):
    """A code cell, tagged `lecture` unless told otherwise, printing `output` or showing a figure."""
    cell = v4.new_code_cell(source, metadata={"tags": ["lecture"]} if tagged else {})
    if output is not None:
        cell.outputs = [v4.new_output("stream", name="stdout", text=output)]
    if figure:
        cell.outputs = [v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]
    return cell


def nb_of(*cells):
    return v4.new_notebook(cells=list(cells))


def promises(lp, *cells):
    return [(f.cell, f.why) for f in lp.check_promises(nb_of(*cells), "nb")]


def names(lp, *cells):
    return [(f.cell, f.why) for f in lp.check_names(nb_of(*cells), "nb")]


def slides(lp, *cells):
    return [(f.cell, f.why) for f in lp.check_slides(nb_of(*cells), "nb")]


def test_a_cell_ending_in_a_colon_without_output_after_it_is_flagged(lp):
    found = promises(lp, md("In numbers:"), md("## Next topic"))
    assert [c for c, _ in found] == [0] and "colon" in found[0][1]


def test_a_cell_ending_in_a_colon_with_its_output_next_on_the_path_passes(lp):
    assert promises(lp, md("In numbers:"), code("print(1)", output="1\n")) == []


def test_an_untagged_output_does_not_answer_a_colon(lp):
    assert [c for c, _ in promises(lp, md("In numbers:"), code("print(1)", tagged=False, output="1\n"))] == [0]


def test_code_without_output_is_passed_over_on_the_way_to_the_output(lp):
    cells = [md("The loss falls:"), code("x = 1"), code("plot(x)", figure=True)]
    assert promises(lp, *cells) == []


def test_a_colon_may_open_an_equation_in_the_next_markdown_cell(lp):
    assert promises(lp, md("The bound reads:"), md("$$\\log p(x) \\ge \\mathcal{L}$$")) == []


def test_a_colon_in_the_slide_text_counts_too(lp):
    assert [c for c, _ in promises(lp, md("Text.", slide="The numbers:"), md("## Next"))] == [0]


def test_below_without_output_on_the_path_is_flagged(lp):
    found = promises(lp, md("The images below are samples."), md("## Next"))
    assert [c for c, _ in found] == [0] and "below" in found[0][1]


def test_below_with_an_output_within_two_shown_cells_passes(lp):
    assert promises(lp, md("The figure below shows samples."), md("Look closely."), code("f()", figure=True)) == []


def test_below_as_a_comparison_is_not_a_promise(lp):
    text = "The loss falls below the floor, is bounded below by zero, and the value below 200 is rare."
    assert promises(lp, md(text)) == []


def test_next_cell_without_output_is_flagged(lp):
    assert [c for c, _ in promises(lp, md("The next cell trains the model."), md("## Next"))] == [0]


def test_above_with_an_earlier_output_on_the_path_passes(lp):
    assert promises(lp, code("f()", figure=True), md("The figure above shows it.")) == []


def test_above_pointing_at_an_untagged_output_is_flagged(lp):
    found = promises(lp, code("f()", tagged=False, figure=True), md("The loss above is small."))
    assert [c for c, _ in found] == [1] and "above" in found[0][1]


def test_above_may_point_at_an_equation_earlier_in_the_same_cell(lp):
    assert promises(lp, md("## 1\n\n$$\\int f(z)\\,dz$$\n\nThe integral above is the point.")) == []


def test_the_table_with_no_output_near_is_flagged(lp):
    assert [c for c, _ in promises(lp, md("The table shows gradient norms."), md("## Next"))] == [0]


def test_a_markdown_table_in_the_cell_answers_the_table(lp):
    assert promises(lp, md("The table shows it.\n\n| a | b |\n|---|---|\n| 1 | 2 |")) == []


def test_a_name_bound_only_off_the_path_is_flagged(lp):
    found = names(lp, code("model = train()", tagged=False), code("print(model)", output="m\n"))
    assert found == [(1, "reads model, bound only in cells off the path")]


def test_an_import_off_the_path_counts_as_a_binding_off_the_path(lp):
    assert [c for c, _ in names(lp, code("import numpy as np", tagged=False), code("np.ones(2)", output="1\n"))] == [1]


def test_a_name_bound_by_an_earlier_tagged_cell_passes(lp):
    cells = [code("model = 1", tagged=False), code("model = train()"), code("print(model)", output="m\n")]
    assert names(lp, *cells) == []


def test_builtins_and_names_bound_nowhere_before_are_not_flagged(lp):
    assert names(lp, code("print(len(range(3)), display)", output="3\n"), code("later = 1", tagged=False)) == []


def test_a_function_s_own_parameters_and_locals_are_not_names_read(lp):
    cells = [code("x = 1\ny = 2", tagged=False), code("def f(x):\n    y = x + 1\n    return y\nf(3)")]
    assert names(lp, *cells) == []


def test_a_global_read_inside_a_function_counts(lp):
    assert [c for c, _ in names(lp, code("scale = 2", tagged=False), code("def f(x):\n    return scale * x"))] == [1]


def test_a_name_read_before_the_cell_binds_it_again_is_flagged(lp):
    found = names(lp, code("state = init()", tagged=False), code("state = step(state)"))
    assert found == [(1, "reads state, bound only in cells off the path")]


def test_a_name_the_cell_binds_before_reading_it_passes(lp):
    cells = [code("x = 1", tagged=False), code("x = 2\nprint(x)", output="2\n")]
    assert names(lp, *cells) == []


def test_a_function_may_read_what_the_cell_binds_after_it(lp):
    cells = [code("y = 1", tagged=False), code("def f():\n    return y\n\ny = 2\nf()")]
    assert names(lp, *cells) == []


def test_magics_do_not_hide_the_names_a_cell_reads(lp):
    assert [c for c, _ in names(lp, code("data = 1", tagged=False), code("%time y = data + 1"))] == [1]


def test_a_tagged_markdown_cell_without_slide_metadata_is_flagged(lp):
    found = slides(lp, md("## 1. A section\n\nText.", slide=None))
    assert [c for c, _ in found] == [0] and "slide" in found[0][1]


def test_slide_text_over_ninety_visible_words_is_flagged(lp):
    found = slides(lp, md("## Title", slide=" ".join(["word"] * 90)))
    assert [c for c, _ in found] == [0] and "91 visible words" in found[0][1]


def test_math_markup_and_link_targets_are_not_visible_words(lp):
    assert (
        lp.visible_words("## Title\n\nThe **ELBO** is $\\log p(x)$, see [notebook 02](02_x.ipynb).\n\n$$a = b$$") == 7
    )


def test_a_list_of_fragments_counts_all_its_items(lp):
    assert slides(lp, md("Text.", slide=["word " * 50, "word " * 41])) != []
    assert slides(lp, md("Text.", slide=["word " * 40, "word " * 40])) == []


def test_an_empty_slide_text_is_allowed(lp):
    assert slides(lp, md("Notes for the slide before.", slide="")) == []


def test_the_estimate_is_spoken_words_plus_figures_plus_slides(lp):
    assert lp.minutes(notes_words=1100, figures_and_tables=5, slides=20) == pytest.approx(10 + 5 + 10)


def test_the_command_exits_1_on_findings_and_prints_the_length(lp, tmp_path, capsys):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb_of(md("# 01 · Title"), md("In numbers:", slide="Numbers")), path)
    assert lp.main(["--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "01_x cell 1: ends with a colon" in out and "01_x: about" in out and "slides" in out


def test_the_command_exits_0_on_a_path_that_stands_alone(lp, tmp_path, capsys):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb_of(md("# 01 · Title"), md("In numbers:"), code("print(1)", output="1\n")), path)
    assert lp.main(["--check", str(path)]) == 0
    assert "path OK" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_s_lecture_path_passes_the_checker(lp, path):
    found, numbers = lp.check(path)
    assert not found, f"{path.stem} ({lp.describe(numbers)}):\n" + "\n".join(map(str, found))


def test_a_figure_too_small_to_read_even_on_a_slide_of_its_own_is_flagged(lp, tmp_path):
    table = "".join(f"run {k:<3}   {k * 1.5:8.2f}\n" for k in range(12))
    crowded = code("print(table)\nplt.show()", output=table)
    crowded.outputs.append(v4.new_output("display_data", data={"image/png": png(600, 400), "text/plain": "<Figure>"}))
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb_of(md("# 01 · Title"), md("## 1. A section"), crowded), path)
    found, _ = lp.check(path)
    assert [(f.cell, f.why.split(":")[0]) for f in found] == [
        (2, "its figure would be shown with type under 14 pt even on a slide of its own (with the cell's other output)")
    ]
    crowded.outputs = crowded.outputs[1:]  # the figure alone fits
    nbformat.write(nb_of(md("# 01 · Title"), md("## 1. A section"), crowded), path)
    assert lp.check(path)[0] == []
