"""`python -m syncd` is the `syncd` program."""

from syncd.cli import main

if __name__ == "__main__":
    main()
