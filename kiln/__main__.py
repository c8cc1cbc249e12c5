import sys

from kiln.cli import main

if __name__ == "__main__":  # a spawned compile worker imports this module as __mp_main__
    sys.exit(main())
