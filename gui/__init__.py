"""The operator GUI (`inspector gui`): live inspection with verdicts, counters, defect log and review.

Plain logic first, Qt on top of it:

- ``session``: thresholds, the verdict rule, shift counters, the defect log, rate/latency meters;
- ``evidence``: NG frames, snapshots and the inspection record, written atomically;
- ``review``: false calls and missed defects on one frame, saved as Pascal VOC;
- ``settings``: what persists between runs (one JSON file);
- ``workers``: capture, inference and evidence threads (latest frame wins between capture and model);
- ``access``: engineer PINs (hashes only) and the bounded engineer session (``python -m gui.access NAME``);
- ``frame_view``, ``panels``, ``line_panels`` (part id, recipe selector): the widgets;
- ``main_window``: the window and its live loop, with its mixins ``window_actions`` (shortcuts, menus,
  dialogs), ``window_settings`` (model, thresholds, template), ``window_recipes`` (the service's recipes,
  part ids), ``window_access`` (engineer login, audit trail), ``window_review``; ``app``: ``run_gui`` for the CLI;
- ``screenshot``: runs the GUI on a real X server and saves a picture plus the measured frame rate/latency.

It uses ``inspector.runtime`` and ``inspector.capture``, and of the line service its recipe files
(``inspector.service.recipes``), audit trail (``inspector.service.audit``) and token hashes (``auth``).
"""
