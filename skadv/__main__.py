import sys

from skadv._cli import main

sys.exit(main())
