"""OpenAI-compatible HTTP server over a Stable LM 2 export (`python -m serving --model PATH`).

The model is transformers' `StableLmForCausalLM` loaded from a Hugging Face export folder; the batcher
around it (continuous batching over a shared KV cache, sampling, logprobs) and the HTTP layer are
ours. Tokenization uses the `tokenizer` package.
"""
