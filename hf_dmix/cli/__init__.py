"""The pieces of ``run_dmix.py``, the command-line script that fine-tunes and evaluates a DMIX classifier.

What lives here, one concern per module:

- ``args``: the argument dataclasses (``ModelArguments``, ``DataArguments``, ``HubArguments``; the training and DMIX
  settings are ``hf_dmix.DMixConfig``), the Table 1 presets, and parsing ``[config.yaml] --flag value ...``.
- ``models``: loading a checkpoint (``package:NAME``, a folder, a Hub id) or building ``config:NAME``, and LoRA.
- ``inputs``: one object per modality (text, image, audio) that loads the data, the model and its processing class
  and turns the splits into model inputs; which modality a run has.
- ``training``: building the trainer, resuming, training, evaluating.
- ``report``: ``results.json``, ``predictions.csv`` and the printed table; ``outcome``: the checks read against it
  (majority baseline, prediction collapse, data diagnostics).
- ``publish``: the publishing flags, the saved model and card, and pushes to the Hub.

What does not: anything about mixing or partners (``hf_dmix`` itself); the order of the steps (``run_dmix.py``).
Every problem found before training is a :class:`hf_dmix.data.DataError` (``run_dmix.py: error: ...``, exit 2).
"""
