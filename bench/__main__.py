import sys

from bench.cli import main

try:
    sys.exit(main())
except KeyboardInterrupt:  # the sandbox has cleaned up by now
    sys.exit(130)
