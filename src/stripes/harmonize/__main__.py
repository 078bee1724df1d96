import sys

from stripes.harmonize.cli import main

sys.exit(main())
