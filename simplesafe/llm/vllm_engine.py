"""vLLM's offline engine as a backend (GPU machines; install ``pip install 'simplesafe[vllm]'``).

One ``LLM`` instance generates the whole list of prompts with continuous batching;
chat-message prompts go through ``LLM.chat`` (the model's chat template), plain strings
through ``LLM.generate``. vLLM is an optional extra: without it, building this backend
raises a :class:`~simplesafe.errors.ConfigError` that says how to install it.

    backend = VLLMBackend("meta-llama/Llama-2-7b-chat-hf")
"""

from __future__ import annotations

from simplesafe.errors import ConfigError
from simplesafe.llm.base import Backend, GenParams, Generation, OnDone, Prompt, apply_stop


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", cache=None, **engine_kwargs):
        try:
            import vllm
        except ImportError:
            raise ConfigError(
                "the vllm backend needs vLLM, which is not installed: pip install 'simplesafe[vllm]' "
                "(GPU machines), or use --backend hf (local transformers) / --backend openai (a vLLM server)"
            ) from None
        super().__init__(model, cache)
        from simplesafe.models.embedded import resolve

        self._vllm = vllm
        self.engine = vllm.LLM(model=resolve(model), dtype=dtype if dtype != "float32" else "auto", **engine_kwargs)

    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        sp = self._vllm.SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                       top_p=params.top_p, stop=params.stop or None, seed=params.seed)
        results: list[Generation | None] = [None] * len(prompts)
        plain = [j for j, p in enumerate(prompts) if isinstance(p, str)]
        chats = [j for j, p in enumerate(prompts) if not isinstance(p, str)]
        if plain:
            outs = self.engine.generate([prompts[j] for j in plain], sp, use_tqdm=False)
            for j, o in zip(plain, outs):
                results[j] = Generation(apply_stop(o.outputs[0].text, params.stop))
        if chats:
            outs = self.engine.chat([prompts[j] for j in chats], sp, use_tqdm=False)
            for j, o in zip(chats, outs):
                results[j] = Generation(apply_stop(o.outputs[0].text, params.stop))
        for j, r in enumerate(results):
            if r is None:
                results[j] = Generation("", error="vLLM returned no output")
            on_done(j, results[j])
        return results
