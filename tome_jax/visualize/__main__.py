"""`python -m tome_jax.visualize ...`: the command line (`tome_jax.visualize.cli`)."""

import sys

from tome_jax.visualize.cli import main

sys.exit(main())
