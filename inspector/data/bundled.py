"""Real labeled pairs shipped inside the package, so demos and tests run with no outside data."""
from pathlib import Path

# Eight DeepPCB pairs (tested image, golden template, labels), MIT licence: see its README.md.
BUNDLED_DEEPPCB = Path(__file__).resolve().parents[1] / "assets" / "deeppcb_sample"
