"""`python -m epcsched` runs the `epcsched` command."""

import sys

from epcsched.cli import main

sys.exit(main())
