"""The chat format of Stable LM 2's released chat model (Zephyr 1.6B), as a Jinja template.

Each message is its role tag on a line of its own, the content, then `<|endoftext|>` and a newline;
a reply is prompted by `<|assistant|>` and a newline. The role tags are plain text in Arcade100k (not
among its 32 special tokens), so they encode as ordinary tokens, as in the released tokenizer. An export
writes the template into `tokenizer_config.json`, where transformers, lm-eval and our server read it,
so a fine-tuned model is prompted as it was trained.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('a message role is system, user or assistant, not ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
