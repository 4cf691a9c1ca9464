"""tools/lecture_path.py: a lecture copy holds exactly the tagged cells, in order, with outputs."""

import nbformat
import pytest
from helpers import load_script


def _tool():
    return load_script("tools/lecture_path.py")


def _notebook(tags_per_cell):
    nb = nbformat.v4.new_notebook()
    for i, tags in enumerate(tags_per_cell):
        cell = nbformat.v4.new_code_cell(f"x = {i}", metadata={"tags": tags} if tags else {})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i}\n")]
        nb.cells.append(cell)
    return nb


def test_the_lecture_copy_keeps_only_tagged_cells_in_order_with_outputs(tmp_path):
    src = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([["lecture"], [], ["lecture", "timings"], []]), src)
    out = _tool().write_lecture(src, tmp_path / "lecture")
    cells = nbformat.read(out, as_version=4).cells
    assert [c.source for c in cells] == ["x = 0", "x = 2"]
    assert [c.outputs[0].text for c in cells] == ["0\n", "2\n"]


def test_a_notebook_without_a_lecture_path_is_an_error_that_says_so(tmp_path):
    src = tmp_path / "02_y.ipynb"
    nbformat.write(_notebook([[], []]), src)
    with pytest.raises(SystemExit, match="no cell is tagged 'lecture'|no cell tagged 'lecture'"):
        _tool().write_lecture(src, tmp_path / "lecture")
