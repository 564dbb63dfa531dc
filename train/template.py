"""Chat templates for assistant-only loss: ``{% generation %}`` markers around assistant turns.

TRL's own training templates are used where TRL knows the model's template (Qwen3 and others).
Otherwise the loop expression that emits a message (``'<|im_start|>' + message['role'] + '\\n' +
message['content'] + '<|im_end|>' + '\\n'`` in ChatML, the ``<|eot_id|>`` form in Llama 3) is
split so that, for assistant messages only, the content and the end-of-turn token fall inside
the markers. Anything else is refused with the reason.
"""

from __future__ import annotations

import re

from harness.errors import SkillsweepError

# trl is imported when a template is patched: seconds at import.

END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>")
_GEN = re.compile(r"\{%-?\s*generation\s*-?%\}")
_EXPR = re.compile(r"\{\{-?(?P<body>.*?)-?\}\}", re.S)
_CONTENT = re.compile(r"""message(?:\[['"]content['"]\]|\.content)""")


class TemplatePatchError(SkillsweepError, ValueError):
    pass


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks assistant turns for TRL's assistant-only loss."""
    return bool(_GEN.search(template or ""))


def _split_plus(expr: str) -> list[str]:
    """Split a Jinja concatenation on top-level '+', respecting quotes and brackets."""
    terms, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote and expr[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "+" and depth == 0:
            terms.append(expr[start:i].strip())
            start = i + 1
    terms.append(expr[start:].strip())
    return terms


def _split_end_literal(term: str) -> tuple[str, str] | None:
    """``'<|im_end|>\\n'`` → (``'<|im_end|>'``, ``'\\n'``); None if the term is no end token."""
    if len(term) < 2 or term[0] not in "'\"" or term[-1] != term[0]:
        return None
    body, q = term[1:-1], term[0]
    for token in END_TOKENS:
        if body.startswith(token):
            rest = body[len(token):]
            return f"{q}{token}{q}", (f"{q}{rest}{q}" if rest else "")
    return None


def _patch_single_expression(template: str) -> str:
    for match in _EXPR.finditer(template):
        body = match.group("body")
        if not _CONTENT.search(body):
            continue
        terms = _split_plus(body)
        idx = next((i for i, t in enumerate(terms) if _CONTENT.search(t)), None)
        if idx is None or idx + 1 >= len(terms):
            continue
        end = _split_end_literal(terms[idx + 1])
        if end is None:
            continue
        end_token, end_rest = end
        header = " + ".join(terms[:idx]) or "''"
        trailer = " + ".join([t for t in [end_rest, *terms[idx + 2:]] if t]) or "''"
        assistant = (f"{{{{ {header} }}}}{{% generation %}}{{{{ {terms[idx]} + {end_token} }}}}"
                     f"{{% endgeneration %}}{{{{ {trailer} }}}}")
        replacement = (f"{{% if message['role'] == 'assistant' %}}{assistant}"
                       f"{{% else %}}{match.group(0)}{{% endif %}}")
        return template[:match.start()] + replacement + template[match.end():]
    raise TemplatePatchError(
        "cannot patch this chat template for assistant-only loss: no single expression emits a message's "
        f"content followed by an end-of-turn token ({', '.join(END_TOKENS)}). Set `chat_template: chatml` in "
        "the recipe to train with skillsweep's ChatML template, or supply a template with {% generation %} markers")


def training_template(tokenizer) -> str:
    """A chat template with generation markers: the tokenizer's own, TRL's, or a generic patch."""
    template = tokenizer.chat_template
    if not template:
        raise TemplatePatchError("the tokenizer has no chat template")
    if has_generation_markers(template):
        return template
    try:
        from trl.chat_template_utils import get_training_chat_template

        patched = get_training_chat_template(tokenizer)
        if patched:
            return patched
    except (ValueError, KeyError, NotImplementedError):
        pass  # not a template TRL knows; try the generic patch
    return _patch_single_expression(template)


CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def assistant_mask_text(tokenizer, messages: list[dict], template: str) -> tuple[list[str], list[int]]:
    """The text of each maximal masked span, and the mask itself, as TRL will see them."""
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    spans, current = [], []
    for token, m in zip(ids, mask, strict=True):
        if m:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans, mask


def verify_mask(tokenizer, template: str) -> None:
    """Raise unless the mask covers exactly each assistant turn's content plus its end token."""
    messages = [{"role": "system", "content": "You are a solver."}, {"role": "user", "content": "Is 2 even?"},
                {"role": "assistant", "content": "Yes, it is.\nANSWER: yes"}, {"role": "user", "content": "And 3?"},
                {"role": "assistant", "content": "No.\nANSWER: no"}]
    spans, _ = assistant_mask_text(tokenizer, messages, template)
    expected = [m["content"] for m in messages if m["role"] == "assistant"]
    # Lengths may differ when the mask is wrong: the check below reports it, so zip stops at the shorter.
    ends = [s[len(e):] for s, e in zip(spans, expected, strict=False) if s.startswith(e)]
    if len(spans) != len(expected) or len(ends) != len(expected) or any(e.strip() not in END_TOKENS for e in ends):
        raise TemplatePatchError(f"the assistant mask does not cover exactly the assistant turns: masked {spans!r}")
