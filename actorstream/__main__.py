"""``python -m actorstream``: the same as the ``actorstream`` command."""

from actorstream.cli import main

if __name__ == "__main__":
    main()
