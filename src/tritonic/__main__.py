import sys

from tritonic.cli import main

sys.exit(main())
