"""Model compression: make the trained detector small and fast enough for a factory box.

One module per technique, each behind an ``inspector`` command; import from the module itself
(``from inspector.compression.distill import distill``), so using one never loads the others.
"""
