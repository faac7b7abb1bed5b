"""The operator GUI (`inspector gui`): live inspection with verdicts, counters, defect log and review.

Plain logic first, Qt on top of it:

- ``session``: thresholds, the verdict rule, shift counters, the defect log, rate/latency meters;
- ``evidence``: NG frames, snapshots and the inspection record, written atomically;
- ``review``: false calls and missed defects on one frame, saved as Pascal VOC;
- ``settings``: what persists between runs (one JSON file);
- ``workers``: capture, inference and evidence threads (latest frame wins between capture and model);
- ``frame_view``, ``panels``, ``main_window``: the widgets; ``app``: ``run_gui`` for the CLI;
- ``screenshot``: runs the GUI on a real X server and saves a picture plus the measured frame rate/latency.

It uses ``inspector.runtime`` and ``inspector.capture`` and nothing below them.
"""
