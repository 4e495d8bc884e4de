"""Train ResShift (the `resshift-train` command; see resshift_jax/train/cli.py).

    python train.py --config configs/realsr_v3.py --workdir DIR [--config.train.iterations=...]
"""

import sys

from resshift_jax.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
