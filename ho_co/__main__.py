import sys

from ho_co.cli import main

sys.exit(main())
