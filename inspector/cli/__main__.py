"""``python -m inspector.cli ...``: the same as the ``inspector`` console script."""
from inspector.cli import main

main()
