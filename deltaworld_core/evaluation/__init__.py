"""Forecast evaluation in rooms of one job each: :mod:`.clips` (what is passed around),
:mod:`.windows` (recordings cut into clips), :mod:`.sources` (where clips come from, features
computed once), :mod:`.metrics` (accumulated scores), :mod:`.evaluator` (every method's forecast
of a batch, scored), :mod:`.report` (table and averages) and :mod:`.cli`, run as
``python -m deltaworld_core.evaluate`` (whose docstring defines the methods and metrics)."""
