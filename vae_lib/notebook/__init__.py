"""What the notebooks use around the lesson, not the lesson itself.

``claims`` (each number the prose states, checked within a measured tolerance), ``exercises``
(checkers for the exercises' answers), ``plotting`` (the figures the notebooks share),
``memory`` (handing back what compiled programs hold), ``progress`` (a training progress bar
that a saved notebook shows finished), ``source`` (showing a library
function's code in a notebook).
"""
