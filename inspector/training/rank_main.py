"""One rank of ``inspector train/distill --nproc N``: the script ``paddle.distributed.launch`` starts per rank.

It runs the ``inspector`` command line with the arguments it was given; the trainer reads its rank from the
launcher's environment (``inspector.training.distributed``).
"""
import os
import sys

# Run as a script, Python puts this file's folder first on sys.path, where module names such as
# ``config`` could shadow installed packages: the package is imported as ``inspector`` instead.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]
_root = os.path.dirname(os.path.dirname(_here))
if _root not in sys.path:  # a source checkout that is not pip-installed
    sys.path.append(_root)

from inspector.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "inspector"
    main()
