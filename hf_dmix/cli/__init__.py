"""The ``hf-dmix`` command (and ``run_dmix.py``, the same ``train``): fine-tune, evaluate and publish a DMIX classifier.

What lives here, one concern per module:

- ``commands``: the table of subcommands (``train``, ``push``; one entry each), the console entry point and the exit
  status of a command; ``train``: the order of a run's steps (``main``) and ``push``.
- ``args``: the argument dataclasses (``ModelArguments``, ``DataArguments``, ``HubArguments``; the training and DMIX
  settings are ``hf_dmix.DMixConfig``), the Table 1 presets, and parsing ``[config.yaml] --flag value ...``.
- ``recipes``: the training schedules of ``--recipe`` (``paper``; ``small-data``, chosen on the grid's validation
  results) and the best-epoch settings ``hf_dmix.compare`` shares.
- ``models``: loading a checkpoint (``package:NAME``, a folder, a Hub id) or building ``config:NAME``, and LoRA.
- ``inputs``: one object per modality (text, image, audio) that loads the data, the model and its processing class
  and turns the splits into model inputs; which modality a run has.
- ``training``: building the trainer, resuming, training, evaluating.
- ``report``: ``results.json``, ``predictions.csv`` and the printed table; ``outcome``: the checks read against it
  (majority baseline, prediction collapse, data diagnostics).
- ``publish``: the publishing flags, the saved model and card, and pushes to the Hub.

What does not: anything about mixing or partners (``hf_dmix`` itself). Every problem found before training is a
:class:`hf_dmix.data.DataError` (``hf-dmix train: error: ...`` / ``run_dmix.py: error: ...``, exit 2).
"""
