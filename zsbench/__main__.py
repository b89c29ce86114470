import sys

from zsbench.cli import main

sys.exit(main())
