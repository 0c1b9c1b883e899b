"""simplesafe.data: curation of ELI5, preference pairs and Simple Wikipedia into SFT, RM and RL data.

- :mod:`simplesafe.data.sources` -- schema-validating loaders;
- :mod:`simplesafe.data.filters` -- datatrove-style filters with kept rejects and the funnel;
- :mod:`simplesafe.data.scoring` -- batched readability + toxicity (``simplesafe data score``);
- :mod:`simplesafe.data.leakage` -- cross-split leakage removal (``simplesafe data leakage``);
- :mod:`simplesafe.data.split` -- the SFT / RM / RL routing rules;
- :mod:`simplesafe.data.config` -- the ``data`` section: sources and the report's thresholds;
- :mod:`simplesafe.data.qa` and :mod:`simplesafe.data.wiki` -- QA routing and Simple Wikipedia leads;
- :mod:`simplesafe.data.build` -- ``build_datasets`` (``simplesafe data build``); its
  docstring names the output dataset formats that the trainers read.
"""
