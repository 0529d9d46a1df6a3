"""``python -m hf_dmix COMMAND [flags]`` (and ``accelerate launch -m hf_dmix train ...``): the ``hf-dmix`` command."""

import sys

from .cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
