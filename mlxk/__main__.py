import sys

from mlxk.cli import main

sys.exit(main())
