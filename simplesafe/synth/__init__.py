"""Synthetic instruction data (``simplesafe synth ...``), all through :mod:`simplesafe.llm` backends.

- :mod:`~simplesafe.synth.backtranslate`: questions for Simple Wikipedia leads with the
  report's prompt -> SFT pairs (``run_backtranslation``).
- :mod:`~simplesafe.synth.self_instruct`: Self-Instruct (Wang et al., 2023) from seed tasks.
- :mod:`~simplesafe.synth.novelty`: its ROUGE-L novelty filter, indexed, with exact decisions.
- :mod:`~simplesafe.synth.curate`: Humpback backtranslation + self-curation (Li et al., 2023).
- :mod:`~simplesafe.synth.select`: LIMA-style quality x diversity selection (Zhou et al., 2023).
- :mod:`~simplesafe.synth.prompts`: the prompt texts, each citing the paper it follows.
"""
