"""``python -m mbsnet``: the same command line as the ``mbsnet`` script."""

from mbsnet.cli import main

if __name__ == "__main__":
    main()
