import sys

from pla4d.cli import main

sys.exit(main())
