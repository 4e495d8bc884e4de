#!/usr/bin/env python
"""ResShift x4 super-resolution, compatible with the official inference_resshift.py.

    python infer.py -i ../shared/data/RealSet65 -o results -v v3 --bs 8
See `python infer.py -h` and resshift_jax/cli_infer.py.
"""

import sys

from resshift_jax.cli_infer import main

if __name__ == "__main__":
    sys.exit(main())
