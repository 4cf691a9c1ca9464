"""A progress bar that also reads right in a saved notebook."""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(total: int):
    """A tqdm bar of ``total`` steps and the function that closes it.

    In a notebook the bar is a widget, and a saved notebook keeps the text shown when it was
    first displayed (0 %). So the widget is displayed with a display id, and closing it
    refreshes that output with the final state (100 %, the time taken).
    """
    from tqdm.auto import tqdm

    try:
        from IPython import get_ipython
        from IPython.display import display
        from tqdm.notebook import tqdm as notebook_tqdm

        in_notebook = get_ipython() is not None and "IPKernelApp" in get_ipython().config
        bar = notebook_tqdm(total=total, desc="training", unit="step", display=False) if in_notebook else None
    except Exception:  # noqa: BLE001 - no IPython or no ipywidgets: a text bar
        bar = None
    if bar is None:
        bar = tqdm(total=total, desc="training", unit="step")
        return bar, bar.close
    handle = display(bar.container, display_id=True)

    def finish():
        bar.close()
        handle.update(bar.container)

    return bar, finish
