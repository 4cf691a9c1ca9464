"""tools/run_notebook.py (`make run`): what makes two runs on one machine store the same file."""

import nbformat
from helpers import load_script

run_notebook = load_script("tools/run_notebook.py")


def _widget_cell(model_id):
    cell = nbformat.v4.new_code_cell("fit(...)")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {
                    "model_id": model_id,
                    "version_major": 2,
                    "version_minor": 0,
                },
                "text/plain": "training:   0%|          | 0/10",
            },
        )
    ]
    return cell


def test_widget_ids_depend_only_on_the_notebook_name_and_their_order():
    ids = []
    for run in ("a" * 32, "b" * 32):  # two runs: random ids differ
        nb = nbformat.v4.new_notebook(cells=[_widget_cell(run), _widget_cell(run[::-1].upper())])
        run_notebook.stable_widget_ids(nb, "01_x.ipynb")
        ids.append([c.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb.cells])
    assert ids[0] == ids[1] and ids[0][0] != ids[0][1]


def test_unchanged_timing_cells_keep_their_stored_output_and_others_do_not():
    def nb_with(outputs):
        cells = [
            nbformat.v4.new_code_cell("print(time())", metadata={"tags": ["timings"]}),
            nbformat.v4.new_code_cell("print(time() + 1)", metadata={"tags": ["timings"]}),
            nbformat.v4.new_code_cell("print(loss)"),
        ]
        for cell, text in zip(cells, outputs, strict=False):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return nbformat.v4.new_notebook(cells=cells)

    old, new = nb_with(["1.0 s\n", "2.0 s\n", "loss 3\n"]), nb_with(["1.5 s\n", "2.5 s\n", "loss 4\n"])
    new.cells[1].source = "print(time() + 2)"  # this timing cell's code changed: measured anew
    assert run_notebook.keep_timings(new, old) == 1
    assert [c.outputs[0].text for c in new.cells] == ["1.0 s\n", "2.5 s\n", "loss 4\n"]
