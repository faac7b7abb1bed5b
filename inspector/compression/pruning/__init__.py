"""Structured channel pruning, by responsibility; the command that strings it together is
``inspector.compression.prune``.

Modules (none imports the command; import from the module itself):

- ``config``: ``PruneConfig`` and the criteria (standard library only: the command line reads its defaults);
- ``groups``: which channels can only be removed together (the table for our detector families);
- ``layer_channels``: where a layer's channels live (its weight, the state-dict entries pruning cuts);
- ``channels``: the criteria (L1, FPGM) and pruning a model, in place or for the length of a ``with``;
- ``size``: parameters and FLOPs;
- ``sensitivity``: the per-group scan and the ratios ``--auto-ratio`` chooses from it.
"""
