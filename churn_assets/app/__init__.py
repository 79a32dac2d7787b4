"""The application: what a person runs (the ``churn`` command, ``churn status``, the drift
story, the generated settings page). The top rank: it may import every layer below, and
nothing below imports it."""
